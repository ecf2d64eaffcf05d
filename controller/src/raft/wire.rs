//! Conversions between openraft's messages and the typed `raft.proto` messages. Malformed input
//! from the wire becomes `Status::invalid_argument`, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use openraft::alias::{EntryOf, LogIdOf, StoredMembershipOf, VoteOf};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{EntryPayload, Membership};
use palisade_proto::v1 as pb;
use tonic::Status;

use super::{Member, Request, TypeConfig};

type C = TypeConfig;
type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;

fn missing(what: &str) -> Status {
    Status::invalid_argument(format!("raft message is missing {what}"))
}

pub fn vote_to_pb(v: &VoteOf<C>) -> pb::Vote {
    pb::Vote {
        term: v.leader_id.term,
        node_id: v.leader_id.node_id,
        committed: v.committed,
    }
}

pub fn vote_from_pb(v: Option<pb::Vote>) -> Result<VoteOf<C>, Status> {
    let v = v.ok_or_else(|| missing("vote"))?;
    let mut out = VoteOf::<C>::new(v.term, v.node_id);
    out.committed = v.committed;
    Ok(out)
}

pub fn log_id_to_pb(l: &LogIdOf<C>) -> pb::LogId {
    pb::LogId {
        term: l.leader_id.term,
        leader_id: l.leader_id.node_id,
        index: l.index,
    }
}

pub fn log_id_opt_to_pb(l: &Option<LogIdOf<C>>) -> Option<pb::LogId> {
    l.as_ref().map(log_id_to_pb)
}

pub fn log_id_from_pb(l: Option<pb::LogId>) -> Option<LogIdOf<C>> {
    l.map(|l| {
        LogIdOf::<C>::new(
            LeaderId {
                term: l.term,
                node_id: l.leader_id,
            },
            l.index,
        )
    })
}

pub fn membership_to_pb(m: &Membership<u64, Member>) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|s| pb::VoterSet {
                ids: s.iter().copied().collect(),
            })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| {
                (
                    *id,
                    pb::RaftNode {
                        raft_addr: n.raft_addr.clone(),
                        admin_addr: n.admin_addr.clone(),
                    },
                )
            })
            .collect(),
    }
}

pub fn membership_from_pb(m: pb::Membership) -> Result<Membership<u64, Member>, Status> {
    let configs: Vec<BTreeSet<u64>> = m
        .configs
        .into_iter()
        .map(|s| s.ids.into_iter().collect())
        .collect();
    let nodes: BTreeMap<u64, Member> = m
        .nodes
        .into_iter()
        .map(|(id, n)| {
            (
                id,
                Member {
                    raft_addr: n.raft_addr,
                    admin_addr: n.admin_addr,
                },
            )
        })
        .collect();
    Membership::new(configs, nodes)
        .map_err(|e| Status::invalid_argument(format!("invalid membership: {e}")))
}

pub fn entry_to_pb(e: &EntryOf<C>) -> Result<pb::Entry, Status> {
    let payload = match &e.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(true),
        EntryPayload::Normal(r) => pb::entry::Payload::Command(
            serde_json::to_vec(r).map_err(|e| Status::internal(e.to_string()))?,
        ),
        EntryPayload::Membership(m) => pb::entry::Payload::Membership(membership_to_pb(m)),
    };
    Ok(pb::Entry {
        log_id: Some(log_id_to_pb(&e.log_id)),
        payload: Some(payload),
    })
}

pub fn entry_from_pb(e: pb::Entry) -> Result<EntryOf<C>, Status> {
    let log_id = log_id_from_pb(e.log_id).ok_or_else(|| missing("entry log id"))?;
    let payload = match e.payload.ok_or_else(|| missing("entry payload"))? {
        pb::entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::entry::Payload::Command(b) => {
            let r: Request = serde_json::from_slice(&b)
                .map_err(|e| Status::invalid_argument(format!("command does not decode: {e}")))?;
            EntryPayload::Normal(r)
        }
        pb::entry::Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(m)?),
    };
    Ok(EntryOf::<C> { log_id, payload })
}

pub fn append_to_pb(r: &AppendEntriesRequest<C>) -> Result<pb::AppendEntriesRequest, Status> {
    Ok(pb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: log_id_opt_to_pb(&r.prev_log_id),
        entries: r
            .entries
            .iter()
            .map(entry_to_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: log_id_opt_to_pb(&r.leader_commit),
    })
}

pub fn append_from_pb(r: pb::AppendEntriesRequest) -> Result<AppendEntriesRequest<C>, Status> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(r.vote)?,
        prev_log_id: log_id_from_pb(r.prev_log_id),
        entries: r
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: log_id_from_pb(r.leader_commit),
    })
}

pub fn append_resp_to_pb(r: &AppendEntriesResponse<C>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(true),
        AppendEntriesResponse::PartialSuccess(l) => {
            // `None` partial success means nothing was accepted; encode it as a zero log id
            // with the sentinel leader id u64::MAX, which no real node uses.
            R::PartialSuccess(l.as_ref().map(log_id_to_pb).unwrap_or(pb::LogId {
                term: 0,
                leader_id: u64::MAX,
                index: 0,
            }))
        }
        AppendEntriesResponse::Conflict => R::Conflict(true),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub fn append_resp_from_pb(
    r: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<C>, Status> {
    use pb::append_entries_response::Result as R;
    Ok(match r.result.ok_or_else(|| missing("append result"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(l) if l.leader_id == u64::MAX => {
            AppendEntriesResponse::PartialSuccess(None)
        }
        R::PartialSuccess(l) => AppendEntriesResponse::PartialSuccess(log_id_from_pb(Some(l))),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(v))?),
    })
}

pub fn vote_req_to_pb(r: &VoteRequest<C>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: log_id_opt_to_pb(&r.last_log_id),
        leadership_transfer: r.leadership_transfer,
    }
}

pub fn vote_req_from_pb(r: pb::VoteRequest) -> Result<VoteRequest<C>, Status> {
    Ok(VoteRequest {
        vote: vote_from_pb(r.vote)?,
        last_log_id: log_id_from_pb(r.last_log_id),
        leadership_transfer: r.leadership_transfer,
    })
}

pub fn vote_resp_to_pb(r: &VoteResponse<C>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: log_id_opt_to_pb(&r.last_log_id),
    }
}

pub fn vote_resp_from_pb(r: pb::VoteResponse) -> Result<VoteResponse<C>, Status> {
    Ok(VoteResponse {
        vote: vote_from_pb(r.vote)?,
        vote_granted: r.vote_granted,
        last_log_id: log_id_from_pb(r.last_log_id),
    })
}

pub fn stored_membership_to_pb(m: &StoredMembershipOf<C>) -> (Option<pb::LogId>, pb::Membership) {
    (
        log_id_opt_to_pb(m.log_id()),
        membership_to_pb(m.membership()),
    )
}

pub fn stored_membership_from_pb(
    log_id: Option<pb::LogId>,
    m: Option<pb::Membership>,
) -> Result<StoredMembershipOf<C>, Status> {
    let m = match m {
        Some(m) => membership_from_pb(m)?,
        None => Membership::default(),
    };
    Ok(StoredMembershipOf::<C>::new(log_id_from_pb(log_id), m))
}
