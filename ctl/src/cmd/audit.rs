//! `palisadectl audit`: the audit trail of writes.

use clap::Args;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::input::first_page;
use crate::report::{Failure, Report, ts};

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only actions starting with this, e.g. `policy.`.
    #[arg(long, default_value = "")]
    action: String,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub(crate) async fn run(c: &AdminClient, a: AuditArgs) -> Result<Report, Failure> {
    let r = call!(
        c,
        audit_service_client::AuditServiceClient,
        list_audit_events,
        pb::ListAuditEventsRequest {
            action_prefix: a.action,
            target: String::new(),
            since: None,
            page: first_page(a.limit),
        }
    );
    let rows = r
        .events
        .iter()
        .map(|e| json!({"revision": e.revision, "time": ts(&e.time), "actor": e.actor.as_ref().map(|a| a.subject.clone()), "action": e.action, "target": e.target, "result": e.result}))
        .collect();
    Ok(Report::table(
        &[
            ("REVISION", "revision"),
            ("TIME", "time"),
            ("ACTOR", "actor"),
            ("ACTION", "action"),
            ("TARGET", "target"),
            ("RESULT", "result"),
        ],
        rows,
    ))
}
