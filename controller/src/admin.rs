//! The admin API: thin gRPC layers over the controller core. Every call authenticates the
//! client certificate and checks its role first; every write is recorded with its actor; input
//! is validated completely before anything is proposed, so a bad request changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use palisade_policy::catalog::{self as cat, Command, Outcome};
use palisade_policy::request::{
    Device as PDevice, DeviceState as PState, Identity, MfaMethod, MfaProof, Protocol,
};
use palisade_policy::{CompiledPolicy, PolicyDocument, SimRequest};
use palisade_proto::v1 as pb;
use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status};

use crate::authz::caller;
use crate::controller::{Controller, IdempotencyKey, now_ms, ts, unavailable_with_leader};
use crate::convert;
use crate::raft::Member;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
const MAX_SECRET_BYTES: usize = 64 * 1024;
const MAX_REVOCATION_TTL: Duration = Duration::from_secs(400 * 86_400);

/// Every admin service, sharing one controller.
#[derive(Debug, Clone)]
pub struct Admin {
    ctl: Controller,
}

impl Admin {
    /// The admin API of `ctl`.
    pub fn new(ctl: Controller) -> Self {
        Self { ctl }
    }
}

fn paginate<T>(
    items: Vec<T>,
    page: Option<pb::PageRequest>,
) -> Result<(Vec<T>, pb::PageResponse), Status> {
    let page = page.unwrap_or_default();
    let size = match page.page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let offset: usize = if page.page_token.is_empty() {
        0
    } else {
        page.page_token
            .parse()
            .map_err(|_| Status::invalid_argument("page_token is not one this server issued"))?
    };
    let total = items.len();
    let out: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let next = if offset + out.len() < total {
        (offset + out.len()).to_string()
    } else {
        String::new()
    };
    Ok((
        out,
        pb::PageResponse {
            next_page_token: next,
        },
    ))
}

fn invalid_document(violations: &[palisade_policy::Violation]) -> Status {
    let failure = pb::ValidationFailure {
        violations: violations
            .iter()
            .map(|v| pb::FieldViolation {
                path: v.path.clone(),
                reason: v.reason.clone(),
            })
            .collect(),
    };
    let summary = violations
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    Status::with_details(
        Code::InvalidArgument,
        format!(
            "the policy document has {} problem(s):\n{summary}",
            violations.len()
        ),
        failure.encode_to_vec().into(),
    )
}

fn duration(d: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(Status::invalid_argument("durations must not be negative"))
        }
        Some(d) if d.seconds == 0 && d.nanos == 0 => Ok(None),
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn required(s: &str, what: &str) -> Result<(), Status> {
    if s.trim().is_empty() {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(())
    }
}

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

    fn membership_status(&self) -> Vec<pb::MemberStatus> {
        let m = self.ctl.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| pb::MemberStatus {
                id: *id,
                raft_addr: n.raft_addr.clone(),
                admin_addr: n.admin_addr.clone(),
                role: if voters.contains(id) {
                    "voter".into()
                } else {
                    "learner".into()
                },
                // Known on the leader only: how far each member has replicated.
                matched_index: if *id == self.ctl.id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map(|l| l.index)
                        .unwrap_or(0)
                },
                reachable: *id == self.ctl.id
                    || m.replication
                        .as_ref()
                        .is_some_and(|r| r.get(id).is_some_and(|l| l.is_some())),
            })
            .collect()
    }

    /// Runs a membership change, waiting (up to 5 s) while a previous one is still being
    /// committed: right after a cluster forms, its initial membership is, and an admin's
    /// `AddLearner` then would fail for no reason the caller could act on.
    async fn membership_change<F, Fut, T>(&self, f: F) -> Result<T, Status>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    T,
                    RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
                >,
            >,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match f().await {
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other.map_err(Self::membership_error),
            }
        }
    }

    fn membership_error(
        e: RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
    ) -> Status {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let leader: Option<(u64, Member)> = f.leader_id.zip(f.leader_node);
                unavailable_with_leader(
                    "membership changes are made on the leader",
                    leader.as_ref().map(|(i, m)| (*i, m)),
                )
            }
            RaftError::APIError(e) => Status::failed_precondition(e.to_string()),
            RaftError::Fatal(e) => Status::unavailable(e.to_string()),
        }
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
            let sim = sim_request(sr)
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

fn sim_request(r: pb::SimulatedRequest) -> Result<SimRequest, String> {
    let protocol = match r.protocol.as_str() {
        "" | "http" => Protocol::Http,
        "h3" => Protocol::H3,
        "tunnel" => Protocol::Tunnel,
        other => return Err(format!("protocol {other:?} is not http, h3 or tunnel")),
    };
    let source_ip = if r.source_ip.is_empty() {
        "0.0.0.0".parse().map_err(|_| "ip")?
    } else {
        r.source_ip
            .parse()
            .map_err(|_| format!("{:?} is not an IP address", r.source_ip))?
    };
    let time = match r.time {
        Some(t) => jiff::Timestamp::new(t.seconds, t.nanos).map_err(|e| format!("time: {e}"))?,
        None => jiff::Timestamp::now(),
    };
    let identity = r.identity.map(|i| -> Result<Identity, String> {
        let mfa = if i.mfa_method.is_empty() {
            None
        } else {
            let method = match i.mfa_method.as_str() {
                "totp" => MfaMethod::Totp,
                "security_key" => MfaMethod::SecurityKey,
                "platform" => MfaMethod::Platform,
                other => {
                    return Err(format!(
                        "mfa_method {other:?} is not totp, security_key or platform"
                    ));
                }
            };
            let age = i.mfa_age.map(|d| d.seconds).unwrap_or(0);
            Some(MfaProof {
                method,
                factor_id: "simulated".into(),
                authenticated_at: time - jiff::SignedDuration::from_secs(age),
                // A simulated proof is taken as the strongest the method allows.
                user_verified: true,
            })
        };
        Ok(Identity {
            provider: i.identity_provider,
            subject: i.subject,
            email: i.email,
            groups: i.groups,
            claims: i
                .claims
                .into_iter()
                .map(|(k, v)| (k, vec![v]))
                .collect::<BTreeMap<_, _>>(),
            mfa,
            session: None,
        })
    });
    let identity = identity.transpose()?;
    let device = r.device.map(|d| {
        let posture = d.posture.unwrap_or_default();
        let os = convert::os_from_pb(posture.os);
        PDevice {
            id: d.id,
            state: match pb::DeviceState::try_from(d.state).unwrap_or(pb::DeviceState::Unspecified)
            {
                pb::DeviceState::Enrolled => PState::Enrolled,
                pb::DeviceState::Wiped => PState::Wiped,
                pb::DeviceState::Revoked => PState::Revoked,
                _ => PState::Pending,
            },
            client_version: semver::Version::parse(&posture.client_version).ok(),
            mandatory_auth: posture.mandatory_auth,
            os: serde_json::from_value(serde_json::Value::String(os)).ok(),
            groups: d.groups,
        }
    });
    Ok(SimRequest {
        label: r.label,
        host: r.host,
        path: if r.path.is_empty() {
            "/".into()
        } else {
            r.path
        },
        protocol,
        source_ip,
        time,
        identity,
        device,
        view_age: Duration::ZERO,
    })
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

#[tonic::async_trait]
impl pb::device_service_server::DeviceService for Admin {
    async fn enroll_device(
        &self,
        req: Request<pb::EnrollDeviceRequest>,
    ) -> Result<Response<pb::EnrollDeviceResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.owner, "owner")?;
        let ttl = duration(r.token_ttl)?.unwrap_or(Duration::from_secs(86_400));
        let token = random_token();
        let expires = now_ms() + ttl.as_millis() as i64;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::CreateDevice {
                    owner: r.owner,
                    serial: r.serial,
                    display_name: r.display_name,
                    groups: r.groups,
                    token_sha256: sha256_hex(&token),
                    token_expires_at_ms: expires,
                },
            )
            .await?;
        let Outcome::Device(id) = &written.outcome else {
            return Err(Status::internal("unexpected outcome"));
        };
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(id).map(convert::device));
        Ok(Response::new(pb::EnrollDeviceResponse {
            device,
            enrollment_token: token,
            token_expires_at: Some(ts(expires)),
            write: Some(written.to_pb()),
        }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(&r.id).map(convert::device))
            .ok_or_else(|| Status::not_found(format!("no device {:?}", r.id)))?;
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(device),
            read: Some(read),
        }))
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let all: Vec<pb::Device> = self.ctl.state.read(|s| {
            s.catalog
                .devices
                .values()
                .filter(|d| r.owner.is_empty() || d.owner == r.owner)
                .map(convert::device)
                .filter(|d| r.state == 0 || d.state == r.state)
                .collect()
        });
        let (devices, page) = paginate(all, r.page)?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices,
            page: Some(page),
            read: Some(read),
        }))
    }

    async fn mark_device_wiped(
        &self,
        req: Request<pb::DeviceActionRequest>,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        self.device_state(req, cat::DeviceState::Wiped).await
    }

    async fn revoke_device(
        &self,
        req: Request<pb::DeviceActionRequest>,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        self.device_state(req, cat::DeviceState::Revoked).await
    }

    async fn record_posture(
        &self,
        req: Request<pb::RecordPostureRequest>,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let p = r
            .posture
            .ok_or_else(|| Status::invalid_argument("posture is required"))?;
        if !p.client_version.is_empty() && semver::Version::parse(&p.client_version).is_err() {
            return Err(Status::invalid_argument(format!(
                "client_version {:?} is not semver",
                p.client_version
            )));
        }
        let posture = cat::Posture {
            os: convert::os_from_pb(p.os),
            os_version: p.os_version,
            client_version: p.client_version,
            mandatory_auth: p.mandatory_auth,
            disk_encrypted: p.disk_encrypted,
            reported_at_ms: now_ms(),
        };
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::RecordPosture {
                    id: r.id.clone(),
                    posture,
                },
            )
            .await?;
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(&r.id).map(convert::device));
        Ok(Response::new(pb::DeviceActionResponse {
            device,
            write: Some(written.to_pb()),
        }))
    }
}

impl Admin {
    async fn device_state(
        &self,
        req: Request<pb::DeviceActionRequest>,
        state: cat::DeviceState,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.id, "id")?;
        required(&r.reason, "reason")?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::SetDeviceState {
                    id: r.id.clone(),
                    state,
                },
            )
            .await?;
        tracing::info!(actor = %who, device = %r.id, ?state, reason = %r.reason, "device state changed");
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(&r.id).map(convert::device));
        Ok(Response::new(pb::DeviceActionResponse {
            device,
            write: Some(written.to_pb()),
        }))
    }
}

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

#[tonic::async_trait]
impl pb::key_service_server::KeyService for Admin {
    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        // Without an overlap, the previous key verifies as long as any session it signed lives;
        // an explicit zero retires it now (ending every session it signed).
        let explicit_zero = r.overlap.is_some_and(|d| d.seconds == 0 && d.nanos == 0);
        let overlap = match duration(r.overlap)? {
            Some(d) => d,
            None if explicit_zero => Duration::ZERO,
            None => Duration::from_millis(
                self.ctl
                    .state
                    .read(|s| s.catalog.session_coverage_ms())
                    .max(0) as u64,
            ),
        };
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let sealed = self
            .ctl
            .key
            .seal(crate::seal::Slot::SigningKey, &secret)
            .map_err(|e| Status::internal(e.to_string()))?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::RotateSigningKey {
                    secret: cat::Sealed(sealed),
                    overlap_ms: overlap.as_millis() as i64,
                },
            )
            .await?;
        let Outcome::Key(kid) = written.outcome.clone() else {
            return Err(Status::internal("unexpected outcome"));
        };
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid,
            write: Some(written.to_pb()),
        }))
    }

    async fn list_signing_keys(
        &self,
        _req: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        self.ctl.linearizable().await?;
        let keys = self.ctl.state.read(|s| {
            s.catalog
                .signing_keys
                .values()
                .map(|k| convert::signing_key(k, Vec::new()))
                .collect()
        });
        Ok(Response::new(pb::ListSigningKeysResponse { keys }))
    }

    async fn put_secret(
        &self,
        req: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        if r.value.is_empty() || r.value.len() > MAX_SECRET_BYTES {
            return Err(Status::invalid_argument(format!(
                "a secret value must be 1 to {MAX_SECRET_BYTES} bytes"
            )));
        }
        let sealed = self
            .ctl
            .key
            .seal(crate::seal::Slot::Secret(&r.name), &r.value)
            .map_err(|e| Status::internal(e.to_string()))?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::PutSecret {
                    name: r.name.clone(),
                    value: cat::Sealed(sealed),
                },
            )
            .await?;
        tracing::info!(actor = %who, name = %r.name, "secret set");
        Ok(Response::new(pb::PutSecretResponse {
            write: Some(written.to_pb()),
        }))
    }

    async fn list_secrets(
        &self,
        _req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        self.ctl.linearizable().await?;
        let secrets = self.ctl.state.read(|s| {
            s.catalog
                .secrets
                .keys()
                .map(|name| pb::Secret {
                    name: name.clone(),
                    value: Vec::new(),
                    updated_at: None,
                })
                .collect()
        });
        Ok(Response::new(pb::ListSecretsResponse { secrets }))
    }
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for Admin {
    async fn get_cluster_status(
        &self,
        _req: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        let m = self.ctl.raft.metrics().borrow_watched().clone();
        Ok(Response::new(pb::GetClusterStatusResponse {
            node_id: self.ctl.id,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: m
                .cluster_committed
                .or(m.local_committed)
                .map(|l| l.index)
                .unwrap_or(0),
            applied_revision: m.last_applied.map(|l| l.index).unwrap_or(0),
            members: self.membership_status(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            state: format!("{:?}", m.state).to_lowercase(),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id must be greater than 0"));
        }
        required(&r.raft_addr, "raft_addr")?;
        let admin_addr = if r.admin_addr.is_empty() {
            r.raft_addr.clone()
        } else {
            r.admin_addr
        };
        let member = Member {
            raft_addr: r.raft_addr,
            admin_addr,
        };
        let resp = self
            .membership_change(|| {
                self.ctl
                    .raft
                    .add_learner(r.id, member.clone(), r.wait_caught_up)
            })
            .await?;
        tracing::info!(actor = %who, id = r.id, "learner added");
        Ok(Response::new(pb::MembershipResponse {
            members: self.membership_status(),
            write: Some(pb::WriteResult {
                revision: resp.log_id.index,
                committed_at: Some(ts(now_ms())),
            }),
        }))
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        if r.voters.is_empty() {
            return Err(Status::invalid_argument("voters must not be empty"));
        }
        let voters: BTreeSet<u64> = r.voters.into_iter().collect();
        let resp = self
            .membership_change(|| {
                self.ctl.raft.change_membership(
                    ChangeMembers::ReplaceAllVoters(voters.clone()),
                    r.retain_as_learners,
                )
            })
            .await?;
        tracing::info!(actor = %who, ?voters, "membership changed");
        Ok(Response::new(pb::MembershipResponse {
            members: self.membership_status(),
            write: Some(pb::WriteResult {
                revision: resp.log_id.index,
                committed_at: Some(ts(now_ms())),
            }),
        }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let ids: BTreeSet<u64> = [r.id].into();
        let m = self.ctl.raft.metrics().borrow_watched().clone();
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == r.id);
        let mut last = None;
        if is_voter {
            last = Some(
                self.membership_change(|| {
                    self.ctl
                        .raft
                        .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
                })
                .await?,
            );
        }
        let still_node = self
            .ctl
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&r.id)
            .is_some();
        if still_node {
            last = Some(
                self.membership_change(|| {
                    self.ctl
                        .raft
                        .change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
                })
                .await?,
            );
        }
        let last =
            last.ok_or_else(|| Status::not_found(format!("node {} is not a member", r.id)))?;
        tracing::info!(actor = %who, id = r.id, "member removed");
        Ok(Response::new(pb::MembershipResponse {
            members: self.membership_status(),
            write: Some(pb::WriteResult {
                revision: last.log_id.index,
                committed_at: Some(ts(now_ms())),
            }),
        }))
    }

    async fn get_propagation_status(
        &self,
        req: Request<pb::GetPropagationStatusRequest>,
    ) -> Result<Response<pb::GetPropagationStatusResponse>, Status> {
        let selector = req.into_inner().selector.unwrap_or_default();
        let edges: Vec<pb::EdgeStatus> = self
            .ctl
            .cluster_edges()
            .await
            .into_iter()
            .filter(|e| selects(&selector, e))
            .collect();
        let m = self.ctl.raft.metrics().borrow_watched().clone();
        let commit_revision = m
            .cluster_committed
            .or(m.local_committed)
            .map(|l| l.index)
            .unwrap_or(0);
        Ok(Response::new(pb::GetPropagationStatusResponse {
            commit_revision,
            edges,
        }))
    }

    async fn wait_for_revision(
        &self,
        req: Request<pb::WaitForRevisionRequest>,
    ) -> Result<Response<pb::WaitForRevisionResponse>, Status> {
        let r = req.into_inner();
        if r.revision == 0 {
            return Err(Status::invalid_argument("revision is required"));
        }
        let timeout = duration(r.timeout)?
            .unwrap_or(Duration::from_secs(10))
            .min(Duration::from_secs(300));
        let scope = r.scope.unwrap_or_default();
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let edges: Vec<pb::EdgeStatus> = self
                .ctl
                .cluster_edges()
                .await
                .into_iter()
                .filter(|e| selects(&scope, e))
                .collect();
            let (applied, pending): (Vec<pb::EdgeStatus>, Vec<pb::EdgeStatus>) = edges
                .into_iter()
                .partition(|e| e.applied_revision >= r.revision);
            let waited = started.elapsed();
            if pending.is_empty() || waited >= timeout {
                return Ok(Response::new(pb::WaitForRevisionResponse {
                    complete: pending.is_empty(),
                    applied: applied.into_iter().map(|e| e.id).collect(),
                    pending,
                    waited: Some(prost_types::Duration {
                        seconds: waited.as_secs() as i64,
                        nanos: waited.subsec_nanos() as i32,
                    }),
                }));
            }
            // poll fast at first (edges usually report within milliseconds), then back off
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// Whether an edge matches a label selector (every label present with exactly that value).
fn selects(sel: &pb::LabelSelector, e: &pb::EdgeStatus) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| e.labels.get(k) == Some(v))
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Admin {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let r = req.into_inner();
        self.ctl.linearizable().await?;
        let since_ms = r.since.map(|t| t.seconds * 1000).unwrap_or(i64::MIN);
        // Admin writes and writes on behalf of users are kept apart (users cannot flush the
        // admin trail); the listing shows both, newest first.
        let all: Vec<pb::AuditEvent> = self.ctl.state.read(|s| {
            s.catalog
                .audit_records()
                .into_iter()
                .rev()
                .filter(|a| {
                    a.at_ms >= since_ms
                        && a.action.starts_with(&r.action_prefix)
                        && (r.target.is_empty() || a.target.contains(&r.target))
                })
                .map(convert::audit)
                .collect()
        });
        let (events, page) = paginate(all, r.page)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events,
            page: Some(page),
        }))
    }
}
