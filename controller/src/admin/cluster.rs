//! `ClusterService`: status, membership changes (through openraft) and edge propagation.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use palisade_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::authz::caller;
use crate::controller::{now_ms, ts, unavailable_with_leader};
use crate::raft::Member;

use super::{Admin, duration, required};

impl Admin {
    fn membership_status(&self) -> Vec<pb::MemberStatus> {
        let raft = self.ctl.raft_status();
        raft.members
            .iter()
            .map(|m| pb::MemberStatus {
                id: m.id,
                raft_addr: m.member.raft_addr.clone(),
                admin_addr: m.member.admin_addr.clone(),
                role: if m.voter { "voter" } else { "learner" }.into(),
                // Known on the leader only: how far each member has replicated.
                matched_index: m.matched.unwrap_or(0),
                reachable: m.id == self.ctl.id || m.matched.is_some(),
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
impl pb::cluster_service_server::ClusterService for Admin {
    async fn get_cluster_status(
        &self,
        _req: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        let raft = self.ctl.raft_status();
        Ok(Response::new(pb::GetClusterStatusResponse {
            node_id: self.ctl.id,
            leader_id: raft.leader.unwrap_or(0),
            term: raft.term,
            commit_index: raft.commit_index,
            applied_revision: raft.applied_index,
            members: self.membership_status(),
            snapshot_index: raft.snapshot_index,
            state: raft.state,
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
        let is_voter = self.ctl.raft_status().member(r.id).is_some_and(|m| m.voter);
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
        let still_node = self.ctl.raft_status().member(r.id).is_some();
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
        Ok(Response::new(pb::GetPropagationStatusResponse {
            commit_revision: self.ctl.raft_status().commit_index,
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
        let revision = r.revision;
        let started = std::time::Instant::now();
        // woken by the edge registries (this member's, and the others' through long polls)
        let (edges, _) = self
            .ctl
            .wait_for_edges(
                |edges| {
                    edges
                        .iter()
                        .filter(|e| selects(&scope, e))
                        .all(|e| e.applied_revision >= revision)
                },
                timeout,
            )
            .await;
        let (applied, pending): (Vec<pb::EdgeStatus>, Vec<pb::EdgeStatus>) = edges
            .into_iter()
            .filter(|e| selects(&scope, e))
            .partition(|e| e.applied_revision >= revision);
        let waited = started.elapsed();
        Ok(Response::new(pb::WaitForRevisionResponse {
            complete: pending.is_empty(),
            applied: applied.into_iter().map(|e| e.id).collect(),
            pending,
            waited: Some(prost_types::Duration {
                seconds: waited.as_secs() as i64,
                nanos: waited.subsec_nanos() as i32,
            }),
        }))
    }
}

/// Whether an edge matches a label selector (every label present with exactly that value).
fn selects(sel: &pb::LabelSelector, e: &pb::EdgeStatus) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| e.labels.get(k) == Some(v))
}
