//! `AuditService`: the trail of admin writes.

use palisade_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;

use super::{Admin, paginate};

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
