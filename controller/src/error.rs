//! Errors of the controller core, and their one mapping to gRPC statuses.
//!
//! The write and read paths return these typed errors; callers inside the controller match on
//! them (a TOTP replay is `Refused(TotpReplayed)`, never "some FAILED_PRECONDITION"), and
//! `From<WriteError> for Status` / `From<ReadError> for Status` are the only places that turn
//! them into what clients see. "Retry elsewhere" (`NotLeader`, `Unavailable`) stays apart from
//! a refusal, which is final.

use palisade_policy::catalog::CommandError;
use palisade_proto::v1 as pb;
use prost::Message;
use tonic::{Code, Status};

use crate::raft::Member;

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The catalog refused the command; nothing changed. Final: retrying gets the same answer.
    #[error("{0}")]
    Refused(#[from] CommandError),
    /// This member is not the leader and could not forward; retry at `leader` (`None`: no
    /// leader is known yet).
    #[error("not the leader")]
    NotLeader {
        /// The leader's id and address, when known.
        leader: Option<(u64, Member)>,
    },
    /// Forwarding to the leader failed in transport; the write may or may not have happened.
    #[error("forwarding to the leader failed: {0}")]
    Forward(Status),
    /// Raft cannot take writes here now (shutting down, or an internal refusal); retry at
    /// another member.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a linearizable read could not be served here.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Linearizable reads are served by the leader.
    #[error("not the leader")]
    NotLeader {
        /// The leader's id and address, when known.
        leader: Option<(u64, Member)>,
    },
    /// Leadership could not be confirmed (no quorum, shutting down).
    #[error("cannot confirm leadership: {0}")]
    Unavailable(String),
}

/// `UNAVAILABLE` with a `LeaderHint` so clients can retry at the leader.
pub fn unavailable_with_leader(msg: &str, leader: Option<(u64, &Member)>) -> Status {
    let hint = pb::LeaderHint {
        leader_id: leader.map(|(id, _)| id).unwrap_or(0),
        leader_admin_addr: leader
            .map(|(_, m)| m.admin_addr.clone())
            .unwrap_or_default(),
    };
    let text = match leader {
        Some((id, m)) => format!("{msg}; the leader is node {id} at {}", m.admin_addr),
        None => format!("{msg}; no leader is known yet, retry shortly"),
    };
    Status::with_details(Code::Unavailable, text, hint.encode_to_vec().into())
}

/// A catalog refusal as a status; messages are written for operators.
pub fn refusal(e: CommandError) -> Status {
    match &e {
        CommandError::InvalidPolicy(v) => {
            let failure = pb::ValidationFailure {
                violations: v
                    .iter()
                    .map(|x| pb::FieldViolation {
                        path: x.path.clone(),
                        reason: x.reason.clone(),
                    })
                    .collect(),
            };
            Status::with_details(
                Code::InvalidArgument,
                e.to_string(),
                failure.encode_to_vec().into(),
            )
        }
        CommandError::VersionConflict { .. }
        | CommandError::TotpReplayed
        | CommandError::CounterRegressed
        | CommandError::ChallengeUsed => Status::failed_precondition(e.to_string()),
        CommandError::LockedOut { .. } => Status::resource_exhausted(e.to_string()),
        CommandError::NotFound { .. } => Status::not_found(e.to_string()),
        // the same answer a controller gives before the write, whichever saw the change first
        CommandError::CertificateNotCurrent => Status::unauthenticated(e.to_string()),
        CommandError::Invalid(_) => Status::invalid_argument(e.to_string()),
    }
}

impl From<WriteError> for Status {
    fn from(e: WriteError) -> Status {
        match e {
            WriteError::Refused(c) => refusal(c),
            WriteError::NotLeader { leader } => unavailable_with_leader(
                "this member is not the leader",
                leader.as_ref().map(|(i, m)| (*i, m)),
            ),
            WriteError::Forward(s) => {
                tracing::warn!(status = %s, "a forwarded write failed");
                match s.code() {
                    Code::DeadlineExceeded | Code::Cancelled => Status::deadline_exceeded(
                        "the leader did not answer in time; the write may or may not have happened",
                    ),
                    _ => unavailable_with_leader("the leader could not be reached", None),
                }
            }
            WriteError::Unavailable(msg) => Status::unavailable(msg),
        }
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Status {
        match e {
            ReadError::NotLeader { leader } => unavailable_with_leader(
                "linearizable reads are served by the leader",
                leader.as_ref().map(|(i, m)| (*i, m)),
            ),
            ReadError::Unavailable(msg) => {
                Status::unavailable(format!("cannot confirm leadership: {msg}"))
            }
        }
    }
}
