//! `palisadectl members`: cluster membership changes (admin role).

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::report::{Failure, Report};

#[derive(Debug, Subcommand)]
pub(crate) enum MemberCmd {
    /// Add a learner, then make it a voter with `members voters`.
    Add {
        /// Node id.
        id: u64,
        /// Its address (`host:port`).
        addr: String,
    },
    /// Set the complete list of voters.
    Voters {
        /// Node ids.
        #[arg(value_delimiter = ',')]
        ids: Vec<u64>,
    },
    /// Remove a member.
    Remove { id: u64 },
}

pub(crate) async fn run(c: &AdminClient, cmd: MemberCmd) -> Result<Report, Failure> {
    let r = match cmd {
        MemberCmd::Add { id, addr } => call!(
            c,
            cluster_service_client::ClusterServiceClient,
            add_learner,
            pb::AddLearnerRequest {
                id,
                raft_addr: addr.clone(),
                admin_addr: addr,
                wait_caught_up: true
            }
        ),
        MemberCmd::Voters { ids } => call!(
            c,
            cluster_service_client::ClusterServiceClient,
            change_membership,
            pb::ChangeMembershipRequest {
                voters: ids,
                retain_as_learners: false
            }
        ),
        MemberCmd::Remove { id } => call!(
            c,
            cluster_service_client::ClusterServiceClient,
            remove_member,
            pb::RemoveMemberRequest { id }
        ),
    };
    let rows = r
        .members
        .iter()
        .map(|m| json!({"id": m.id, "role": m.role, "addr": m.raft_addr}))
        .collect();
    let table = Report::table(&[("ID", "id"), ("ROLE", "role"), ("ADDRESS", "addr")], rows);
    Ok(Report::new(
        table.text,
        json!({"revision": r.write.unwrap_or_default().revision, "members": table.value}),
    ))
}
