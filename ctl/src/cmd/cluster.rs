//! `palisadectl status`, `edges` and `wait`: the cluster's state and how far every edge has
//! got.

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::{Value, json};

use crate::input::{duration, selector};
use crate::report::{Failure, Report, ts};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCmd {
    /// Cluster status: members, leader, term, commit and applied indexes.
    Status,
    /// Edges: the revision each has applied, its lag and when it last reported.
    Edges {
        /// Only edges with these labels, `key=value,...`.
        #[arg(long, short = 'l', value_delimiter = ',')]
        selector: Vec<String>,
    },
    /// Wait until every edge (in scope) enforces a revision.
    Wait {
        /// The revision (as printed by a write).
        revision: u64,
        /// Only edges with these labels, `key=value,...`.
        #[arg(long, short = 'l', value_delimiter = ',')]
        selector: Vec<String>,
        /// Give up after this long, e.g. `30s`.
        #[arg(long, default_value = "10s")]
        within: String,
    },
}

fn edge_json(e: &pb::EdgeStatus) -> Value {
    json!({"id": e.id, "labels": e.labels, "applied_revision": e.applied_revision, "lag": e.lag, "last_seen": ts(&e.last_seen), "connected_to": e.connected_to, "ready": e.ready})
}

pub(crate) async fn run(c: &AdminClient, cmd: ClusterCmd) -> Result<Report, Failure> {
    match cmd {
        ClusterCmd::Status => status(c).await,
        ClusterCmd::Edges { selector: labels } => {
            let r = call!(
                c,
                cluster_service_client::ClusterServiceClient,
                get_propagation_status,
                pb::GetPropagationStatusRequest {
                    selector: Some(selector(&labels)?)
                }
            );
            let table = Report::table(
                &[
                    ("EDGE", "id"),
                    ("APPLIED", "applied_revision"),
                    ("LAG", "lag"),
                    ("READY", "ready"),
                    ("CONTROLLER", "connected_to"),
                    ("LAST SEEN", "last_seen"),
                ],
                r.edges.iter().map(edge_json).collect(),
            );
            Ok(Report::new(
                format!("commit revision {}\n{}", r.commit_revision, table.text),
                json!({"commit_revision": r.commit_revision, "edges": table.value}),
            ))
        }
        ClusterCmd::Wait {
            revision,
            selector: labels,
            within,
        } => {
            let r = call!(
                c,
                cluster_service_client::ClusterServiceClient,
                wait_for_revision,
                pb::WaitForRevisionRequest {
                    revision,
                    scope: Some(selector(&labels)?),
                    timeout: Some(duration(&within)?)
                }
            );
            let waited = r
                .waited
                .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
                .unwrap_or(0.0);
            if !r.complete {
                let pending = r
                    .pending
                    .iter()
                    .map(|e| format!("{} (at {})", e.id, e.applied_revision))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Failure::new(
                    7,
                    format!(
                        "revision {revision} is not enforced everywhere after {waited:.3}s; pending: {pending}"
                    ),
                ));
            }
            Ok(Report::new(
                format!(
                    "revision {revision} is enforced by {} edge(s) ({waited:.3}s)\n",
                    r.applied.len()
                ),
                json!({"complete": r.complete, "applied": r.applied, "pending": r.pending.iter().map(edge_json).collect::<Vec<_>>(), "waited_seconds": waited}),
            ))
        }
    }
}

async fn status(c: &AdminClient) -> Result<Report, Failure> {
    let r = call!(
        c,
        cluster_service_client::ClusterServiceClient,
        get_cluster_status,
        pb::GetClusterStatusRequest {}
    );
    let mut text = format!(
        "node {} ({}); leader {}; term {}; commit index {}; applied revision {}; snapshot index {}\n",
        r.node_id,
        r.state,
        r.leader_id,
        r.term,
        r.commit_index,
        r.applied_revision,
        r.snapshot_index
    );
    for m in &r.members {
        let matched = if r.state == "leader" {
            format!("  replicated to {}", m.matched_index)
        } else {
            String::new()
        };
        let leader = if m.id == r.leader_id {
            "  (leader)"
        } else {
            ""
        };
        text.push_str(&format!(
            "  {:<4} {:<8} {}{matched}{leader}\n",
            m.id, m.role, m.raft_addr
        ));
    }
    Ok(Report::new(
        text,
        json!({"node_id": r.node_id, "state": r.state, "leader_id": r.leader_id, "term": r.term, "commit_index": r.commit_index, "applied_revision": r.applied_revision, "snapshot_index": r.snapshot_index, "members": r.members.iter().map(|m| json!({"id": m.id, "role": m.role, "addr": m.raft_addr, "matched_index": m.matched_index, "reachable": m.reachable})).collect::<Vec<_>>()}),
    ))
}
