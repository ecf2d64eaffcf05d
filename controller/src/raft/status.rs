//! What the rest of the controller may know about Raft, read from openraft's metrics in this one
//! place: who leads, how far the log is committed and applied, the members and, on the leader,
//! how far each has replicated. Nothing outside `raft/` reads `RaftMetrics` (status, heartbeats,
//! propagation lag, membership checks and the Prometheus export all go through `RaftStatus`),
//! so an openraft upgrade that changes its metrics changes this file only.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;

use super::{Member, StateMachine, TypeConfig};

type Metrics = openraft::RaftMetrics<TypeConfig>;

/// One member as this member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Its addresses.
    pub member: Member,
    /// A voter (otherwise a learner).
    pub voter: bool,
    /// On the leader: the last log index it has replicated (this member: its own last index).
    pub matched: Option<u64>,
}

/// A point-in-time view of this member's Raft state.
#[derive(Debug, Clone)]
pub struct RaftStatus {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// The committed log index (the cluster's, or this member's own record of it).
    pub commit_index: u64,
    /// The last applied index (the catalog revision).
    pub applied_index: u64,
    /// The last log index.
    pub last_log_index: u64,
    /// The last snapshot's index.
    pub snapshot_index: u64,
    /// Members in id order.
    pub members: Vec<MemberStatus>,
    /// On the leader: how long ago a quorum last acknowledged it (`None`: never).
    pub quorum_acked_ago: Option<Duration>,
}

impl RaftStatus {
    fn of(me: u64, m: &Metrics) -> Self {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| MemberStatus {
                id: *id,
                member: n.clone(),
                voter: voters.contains(id),
                matched: if *id == me {
                    m.last_log_index
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map(|l| l.index)
                },
            })
            .collect();
        Self {
            state: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader,
            commit_index: m
                .cluster_committed
                .or(m.local_committed)
                .map(|l| l.index)
                .unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            members,
            quorum_acked_ago: m.last_quorum_acked.as_ref().map(|t| t.elapsed()),
        }
    }

    /// Member `id`, if it is one.
    pub fn member(&self, id: u64) -> Option<&MemberStatus> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The leader's id and addresses, if known.
    pub fn leader_member(&self) -> Option<(u64, Member)> {
        let id = self.leader?;
        Some((id, self.member(id)?.member.clone()))
    }

    /// How many voters there are.
    pub fn voters(&self) -> usize {
        self.members.iter().filter(|m| m.voter).count()
    }
}

/// This member's status now.
pub fn status(me: u64, raft: &openraft::Raft<TypeConfig, StateMachine>) -> RaftStatus {
    RaftStatus::of(me, &raft.metrics().borrow_watched())
}

/// Status changes, for exporters that follow them.
pub struct StatusWatch {
    me: u64,
    rx: openraft::alias::WatchReceiverOf<TypeConfig, Metrics>,
}

impl std::fmt::Debug for StatusWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWatch").field("me", &self.me).finish()
    }
}

impl StatusWatch {
    /// Follows `raft`'s status.
    pub fn new(me: u64, raft: &openraft::Raft<TypeConfig, StateMachine>) -> Self {
        Self {
            me,
            rx: raft.metrics(),
        }
    }

    /// The status now.
    pub fn current(&self) -> RaftStatus {
        RaftStatus::of(self.me, &self.rx.borrow_watched())
    }

    /// Waits for a change; `false` once Raft has shut down.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}
