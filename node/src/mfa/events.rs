//! The user's sign-in and MFA history: each attempt is sent to the controllers in the
//! background (the answer to the user does not wait for it), and read back for the portal.

use std::collections::BTreeMap;

use palisade_edge_core::Caller;
use palisade_proto::v1 as pb;

use crate::controllers::api::AuthEvent;
use crate::http::Gateway;

impl Gateway {
    /// Records a sign-in or MFA attempt in the user's history (best effort, in the
    /// background: the answer to the user does not wait for it).
    pub(crate) fn record_event(
        &self,
        caller: &Caller,
        action: &str,
        result: &str,
        rid: &str,
        host: &str,
        factor_id: &str,
    ) {
        let mut details = BTreeMap::from([
            ("session_id".to_string(), caller.session.sid.clone()),
            ("host".to_string(), host.to_string()),
        ]);
        if !factor_id.is_empty() {
            details.insert("factor_id".into(), factor_id.into());
        }
        self.record_auth_event(
            &caller.session.idp,
            &caller.session.sub,
            action,
            result,
            rid,
            details,
        );
    }

    /// Sends one auth event to the controllers in the background.
    pub(crate) fn record_auth_event(
        &self,
        idp: &str,
        sub: &str,
        action: &str,
        result: &str,
        rid: &str,
        details: BTreeMap<String, String>,
    ) {
        let Some(ctl) = self.controllers.clone() else {
            return;
        };
        let now = jiff::Timestamp::now();
        let ev = pb::AuditEvent {
            time: Some(prost_types::Timestamp {
                seconds: now.as_second(),
                nanos: now.subsec_nanosecond(),
            }),
            action: action.into(),
            target: format!("{idp}/{sub}"),
            result: result.into(),
            edge_id: self.edge_id.clone(),
            request_id: rid.into(),
            details: details.into_iter().collect(),
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) = ctl.record_auth_events(vec![ev]).await {
                tracing::debug!(error = %e, "auth event not recorded");
            }
        });
    }

    /// The caller's recent sign-in and MFA attempts (empty when no controller answers).
    pub(crate) async fn auth_events(&self, caller: &Caller) -> Vec<AuthEvent> {
        let Some(ctl) = &self.controllers else {
            return Vec::new();
        };
        ctl.list_auth_events(caller, 50).await.unwrap_or_default()
    }
}
