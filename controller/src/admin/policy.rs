//! `PolicyService`: apply, diff, simulate, read and roll back the policy document.

use palisade_policy::catalog::{Command, Outcome};
use palisade_policy::{CompiledPolicy, PolicyDocument};
use palisade_proto::v1 as pb;
use prost::Message;
use tonic::{Code, Request, Response, Status};

use crate::authz::caller;
use crate::controller::IdempotencyKey;
use crate::convert;

use super::{Admin, invalid_document, paginate};

impl Admin {
    fn parse_checked(&self, json: &str) -> Result<(PolicyDocument, CompiledPolicy), Status> {
        if json.len() > self.ctl.max_document_bytes {
            return Err(invalid_document(&[palisade_policy::Violation {
                path: "$".into(),
                reason: format!(
                    "document is {} bytes; this controller accepts at most {} bytes",
                    json.len(),
                    self.ctl.max_document_bytes
                ),
            }]));
        }
        CompiledPolicy::from_json(json).map_err(|v| invalid_document(&v.0))
    }

    fn current_document(&self) -> Option<(u64, PolicyDocument)> {
        self.ctl
            .state
            .read(|s| {
                s.catalog
                    .current_policy()
                    .map(|p| (p.version, p.document_json.clone()))
            })
            .and_then(|(v, json)| palisade_policy::parse_document(&json).ok().map(|d| (v, d)))
    }

    fn diff_against(&self, new: &PolicyDocument, against: u64) -> Result<pb::PolicyDiff, Status> {
        let old = if against == 0 {
            self.current_document().map(|(_, d)| d)
        } else {
            let json = self.ctl.state.read(|s| {
                s.catalog
                    .policy_history
                    .iter()
                    .find(|p| p.version == against)
                    .map(|p| p.document_json.clone())
            });
            let json =
                json.ok_or_else(|| Status::not_found(format!("no policy version {against}")))?;
            palisade_policy::parse_document(&json).ok()
        };
        let d = palisade_policy::diff::diff(old.as_ref(), new);
        Ok(pb::PolicyDiff {
            added_applications: d.added_applications,
            removed_applications: d.removed_applications,
            changed_applications: d.changed_applications,
            changed_identity_providers: d.changed_identity_providers,
            unified: d.unified,
        })
    }

    fn policy_response(
        &self,
        written: &crate::controller::Written,
        diff: pb::PolicyDiff,
    ) -> Result<pb::ApplyPolicyResponse, Status> {
        let Outcome::Policy(v) = written.outcome else {
            return Err(Status::internal("unexpected outcome"));
        };
        let version = self.ctl.state.read(|s| {
            s.catalog
                .policy_history
                .iter()
                .find(|p| p.version == v)
                .map(|p| convert::policy_version(p, false))
        });
        Ok(pb::ApplyPolicyResponse {
            version,
            write: Some(written.to_pb()),
            diff: Some(diff),
        })
    }
}

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for Admin {
    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (doc, _) = self.parse_checked(&r.document_json)?;
        let diff = self.diff_against(&doc, 0)?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::ApplyPolicy {
                    document_json: r.document_json,
                    comment: r.comment,
                    expected_version: r.expected_version,
                },
            )
            .await?;
        tracing::info!(actor = %who, revision = written.revision, "policy applied");
        Ok(Response::new(self.policy_response(&written, diff)?))
    }

    async fn diff_policy(
        &self,
        req: Request<pb::DiffPolicyRequest>,
    ) -> Result<Response<pb::DiffPolicyResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(0).await?;
        match self.parse_checked(&r.document_json) {
            Ok((doc, _)) => Ok(Response::new(pb::DiffPolicyResponse {
                violations: vec![],
                diff: Some(self.diff_against(&doc, r.against_version)?),
                read: Some(read),
            })),
            Err(status) if status.code() == Code::InvalidArgument => {
                let failure = pb::ValidationFailure::decode(status.details()).unwrap_or_default();
                Ok(Response::new(pb::DiffPolicyResponse {
                    violations: failure.violations,
                    diff: None,
                    read: Some(read),
                }))
            }
            Err(status) => Err(status),
        }
    }

    async fn simulate_policy(
        &self,
        req: Request<pb::SimulatePolicyRequest>,
    ) -> Result<Response<pb::SimulatePolicyResponse>, Status> {
        let r = req.into_inner();
        let json = if r.document_json.is_empty() {
            self.ctl.linearizable().await?;
            self.ctl
                .state
                .read(|s| s.catalog.current_policy().map(|p| p.document_json.clone()))
                .ok_or_else(|| {
                    Status::failed_precondition(
                        "no policy has been applied yet; pass a draft document",
                    )
                })?
        } else {
            r.document_json
        };
        let policy = match self.parse_checked(&json) {
            Ok((_, p)) => p,
            Err(status) if status.code() == Code::InvalidArgument => {
                let failure = pb::ValidationFailure::decode(status.details()).unwrap_or_default();
                return Ok(Response::new(pb::SimulatePolicyResponse {
                    violations: failure.violations,
                    results: vec![],
                }));
            }
            Err(status) => return Err(status),
        };
        let mut results = Vec::with_capacity(r.requests.len());
        for (i, sr) in r.requests.into_iter().enumerate() {
            let sim = convert::sim_spec(sr)
                .into_request(jiff::Timestamp::now())
                .map_err(|e| Status::invalid_argument(format!("requests[{i}]: {e}")))?;
            let out = palisade_policy::simulate::simulate_one(&policy, &sim);
            results.push(pb::SimulationResult {
                label: out.label.clone(),
                application: out.application.clone().unwrap_or_default(),
                decision: out.kind().into(),
                rule: out
                    .decision
                    .as_ref()
                    .and_then(|d| d.rule())
                    .map(|r| r.name.to_string())
                    .unwrap_or_default(),
                reason: out.explanation.clone(),
                mfa_methods: out.mfa_methods().into_iter().map(String::from).collect(),
            });
        }
        Ok(Response::new(pb::SimulatePolicyResponse {
            violations: vec![],
            results,
        }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let version = self.ctl.state.read(|s| {
            let h = &s.catalog.policy_history;
            let p = if r.version == 0 {
                h.last()
            } else {
                h.iter().find(|p| p.version == r.version)
            };
            p.map(|p| convert::policy_version(p, true))
        });
        if version.is_none() && r.version != 0 {
            return Err(Status::not_found(format!(
                "no policy version {}",
                r.version
            )));
        }
        Ok(Response::new(pb::GetPolicyResponse {
            version,
            read: Some(read),
        }))
    }

    async fn list_policy_history(
        &self,
        req: Request<pb::ListPolicyHistoryRequest>,
    ) -> Result<Response<pb::ListPolicyHistoryResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let all: Vec<pb::PolicyVersion> = self.ctl.state.read(|s| {
            s.catalog
                .policy_history
                .iter()
                .rev()
                .map(|p| convert::policy_version(p, false))
                .collect()
        });
        let (versions, page) = paginate(all, r.page)?;
        Ok(Response::new(pb::ListPolicyHistoryResponse {
            versions,
            page: Some(page),
            read: Some(read),
        }))
    }

    async fn rollback_policy(
        &self,
        req: Request<pb::RollbackPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        if r.to_version == 0 {
            return Err(Status::invalid_argument("to_version is required"));
        }
        let old = self.ctl.state.read(|s| {
            s.catalog
                .policy_history
                .iter()
                .find(|p| p.version == r.to_version)
                .map(|p| p.document_json.clone())
        });
        let old =
            old.ok_or_else(|| Status::not_found(format!("no policy version {}", r.to_version)))?;
        let (doc, _) = self.parse_checked(&old)?;
        let diff = self.diff_against(&doc, 0)?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::RollbackPolicy {
                    to_version: r.to_version,
                    comment: r.comment,
                },
            )
            .await?;
        Ok(Response::new(self.policy_response(&written, diff)?))
    }
}
