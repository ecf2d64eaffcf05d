//! The self-service portal: the user's factors (add, rename, remove), sessions and devices
//! (revocable), and recent sign-in and MFA attempts.

use http::{Response, StatusCode};
use palisade_edge_core::reserved::PortalAction;
use palisade_edge_core::{Caller, View};
use palisade_policy::catalog::DeviceRecord;
use palisade_proto::v1 as pb;

use crate::RESERVED;
use crate::auth::claims::UserRefOf;
use crate::http::Gateway;
use crate::http::context::RequestCtx;
use crate::http::csrf::{Submitted, csrf_token};
use crate::http::framing::enc;
use crate::http::framing::redirect;
use crate::mfa::{
    Answer, call_failure, fmt_time, kind_name, portal_after, portal_with, submitted_rd,
    unreachable, user_factors,
};
use crate::pages::{self, escape};
use crate::proxy::Body;
use palisade_edge_core::mfa::recently_verified;

/// What the portal page shows besides the account: the change just made, where the user was
/// going before (the way back), and why the last action failed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PortalPage<'a> {
    /// `added`, `removed`, `renamed`, `revoked`.
    pub done: Option<&'a str>,
    /// Where the user was going (a safe local path), offered as "Continue to ...".
    pub rd: Option<&'a str>,
    /// The last action's failure.
    pub error: Option<&'a str>,
}

impl Gateway {
    /// The portal page.
    pub(crate) async fn portal(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        at: PortalPage<'_>,
    ) -> Response<Body> {
        let (view, rid, now) = (&*ctx.view, ctx.rid.as_str(), ctx.now);
        let PortalPage { done, rd, error } = at;
        let rd = rd.filter(|r| !r.starts_with(RESERVED));
        let csrf = csrf_token(&caller.session.sid);
        let factors = user_factors(view, caller);
        let recent = recently_verified(caller, now);
        let mut body = format!(
            "<p>Signed in as <strong>{}</strong> ({}).</p>",
            escape(if caller.session.email.is_empty() {
                &caller.session.sub
            } else {
                &caller.session.email
            }),
            escape(&caller.session.idp)
        );
        let notice = match done {
            Some("added") => Some("The factor was added."),
            Some("removed") => Some("The factor was removed."),
            Some("renamed") => Some("The factor was renamed."),
            Some("revoked") => Some("Revoked."),
            _ => None,
        };
        if let Some(n) = notice {
            body.push_str(&format!(
                "<p class=ok role=status id=notice>{}</p>",
                escape(n)
            ));
        }
        if let Some(e) = error {
            body.push_str(&format!("<p class=error role=alert>{}</p>", escape(e)));
        }
        if let Some(rd) = rd {
            // The way back to where the user was going: the one prominent button.
            let path = rd.split('?').next().unwrap_or("/");
            let name = ctx
                .policy
                .route(&ctx.host, path)
                .map(|app| app.name.to_string())
                .unwrap_or_else(|| rd.to_string());
            body.push_str(&format!(
                "<p><a class=button id=continue href=\"{}\">Continue to {}</a></p>",
                escape(rd),
                escape(&name)
            ));
        }
        let rd_field = format!(
            "<input type=hidden name=rd value=\"{}\">",
            escape(rd.unwrap_or_default())
        );
        body.push_str("<h2>Your second factors</h2>");
        if factors.is_empty() {
            body.push_str("<p>You have none yet. Add one below: applications protected by Palisade ask for it.</p>");
        } else {
            body.push_str(
                "<table id=factors><tr><th>Name</th><th>Kind</th><th>Added</th><th></th></tr>",
            );
            for f in &factors {
                let added = jiff::Timestamp::from_millisecond(f.created_at_ms)
                    .ok()
                    .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                body.push_str(&format!(
                    "<tr data-factor=\"{id}\"><td>{name}</td><td>{kind}</td><td>{added}</td><td>\
                     <form method=post action=\"/.palisade/portal/factor/rename\" class=inline><input type=hidden name=csrf value=\"{csrf}\">{rd_field}<input type=hidden name=factor_id value=\"{id}\"><input name=name aria-label=\"New name\" placeholder=\"New name\" maxlength=64 required><button type=submit class=small>Rename</button></form> \
                     <form method=post action=\"/.palisade/portal/factor/remove\" class=inline><input type=hidden name=csrf value=\"{csrf}\">{rd_field}<input type=hidden name=factor_id value=\"{id}\"><button type=submit class=\"small danger\">Remove</button></form></td></tr>",
                    id = escape(&f.id),
                    name = escape(&f.name),
                    kind = kind_name(f.kind),
                    added = escape(&added),
                ));
            }
            body.push_str("</table>");
        }
        body.push_str("<h2>Add a factor</h2>");
        if !factors.is_empty() && !recent {
            body.push_str(&format!(
                "<p>To add or remove factors, first <a href=\"/.palisade/mfa?rd={}\">verify with an existing factor</a> (valid for 10 minutes).</p>",
                enc(&portal_with(rd))
            ));
        } else {
            let code_field = if factors.is_empty() && self.enrollment_needs_code(view) {
                "<label>Enrollment code from your administrator<br><input name=enrollment_code id=enrollment_code required></label>"
            } else {
                ""
            };
            body.push_str(&format!(
                "<form method=post action=\"/.palisade/portal/totp/begin\" class=add><input type=hidden name=csrf value=\"{csrf}\">{rd_field}{code_field}\
                 <label>Name<br><input name=name id=totp-name value=\"Authenticator app\" maxlength=64></label> <button type=submit id=add-totp>Add an authenticator app</button></form>\
                 <div class=\"webauthn-add add\" data-rd=\"{rd}\">{code_js}\
                 <p><label>Name<br><input id=key-name value=\"Security key\" maxlength=64></label> <button type=button id=add-security-key>Add a security key</button></p>\
                 <p><label>Name<br><input id=platform-name value=\"This device\" maxlength=64></label> <button type=button id=add-platform>Add this device (Touch ID, Windows Hello)</button></p>\
                 <p><button type=button id=cancel-webauthn class=small hidden>Cancel</button></p></div><p id=status role=status></p>",
                rd = escape(rd.unwrap_or_default()),
                code_js = if code_field.is_empty() { "" } else { "<label>Enrollment code (for a key)<br><input id=webauthn-code></label><br>" },
            ));
        }
        // Sessions and devices.
        let events = self.auth_events(caller).await;
        body.push_str("<h2>Your sessions</h2><table id=sessions><tr><th>Signed in</th><th>Where</th><th></th></tr>");
        let mut seen = std::collections::HashSet::new();
        for e in events
            .iter()
            .filter(|e| e.action == "login.oidc" && e.result == "ok")
        {
            let Some(sid) = e.details.get("session_id") else {
                continue;
            };
            if !seen.insert(sid.clone()) {
                continue;
            }
            let exp: i64 = e
                .details
                .get("expires_at")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let iat: i64 = e
                .details
                .get("issued_at")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let rev: u64 = e
                .details
                .get("revision")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if exp <= now
                || view.revocations.session_revoked(
                    sid,
                    &caller.session.idp,
                    &caller.session.sub,
                    iat,
                    rev,
                )
            {
                continue;
            }
            let this = *sid == caller.session.sid;
            body.push_str(&format!(
                "<tr><td>{}</td><td>{} via {}</td><td>{}</td></tr>",
                escape(&fmt_time(e.at)),
                escape(e.details.get("host").map(String::as_str).unwrap_or("")),
                escape(&e.edge_id),
                if this {
                    "this session".to_string()
                } else {
                    format!(
                        "<form method=post action=\"/.palisade/portal/revoke\" class=inline><input type=hidden name=csrf value=\"{csrf}\">{rd_field}<input type=hidden name=session_id value=\"{}\"><button type=submit class=\"small danger\">Sign out</button></form>",
                        escape(sid)
                    )
                }
            ));
        }
        body.push_str("</table>");
        let devices: Vec<&DeviceRecord> = view
            .devices
            .values()
            .filter(|d| {
                d.owner == caller.session.sub
                    || (!caller.session.email.is_empty() && d.owner == caller.session.email)
            })
            .collect();
        if !devices.is_empty() {
            body.push_str("<h2>Your devices</h2><table id=devices><tr><th>Device</th><th>State</th><th></th></tr>");
            for d in devices {
                let revoked = view.revocations.device_revoked(&d.id);
                body.push_str(&format!(
                    "<tr><td>{} <span class=muted>{}</span></td><td>{}</td><td>{}</td></tr>",
                    escape(&d.display_name),
                    escape(&d.serial),
                    if revoked { "revoked" } else { "active" },
                    if revoked {
                        String::new()
                    } else {
                        format!(
                            "<form method=post action=\"/.palisade/portal/revoke\" class=inline><input type=hidden name=csrf value=\"{csrf}\">{rd_field}<input type=hidden name=device_id value=\"{}\"><button type=submit class=\"small danger\">Revoke</button></form>",
                            escape(&d.id)
                        )
                    }
                ));
            }
            body.push_str("</table>");
        }
        body.push_str("<h2>Recent sign-in and MFA attempts</h2><table id=events><tr><th>Time</th><th>What</th><th>Result</th><th>Edge</th></tr>");
        for e in events.iter().take(20) {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&fmt_time(e.at)),
                escape(&e.action),
                escape(&e.result),
                escape(&e.edge_id),
            ));
        }
        body.push_str("</table><p><a href=\"/.palisade/logout\">Sign out</a></p>");
        pages::interactive(StatusCode::OK, "Your account", &body, &csrf, rid)
    }

    /// Form posts from the portal.
    pub(crate) async fn portal_action(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        action: PortalAction,
        f: &Submitted,
        enroll: Option<&str>,
    ) -> Answer {
        let rid = ctx.rid.as_str();
        let Some(ctl) = &self.controllers else {
            return Err(unreachable());
        };
        let field = |k: &str| f.field(k);
        let rd = submitted_rd(f);
        let outcome: Result<(u64, &str), String> = match action {
            PortalAction::TotpBegin => return self.totp_begin(ctx, caller, f).await,
            PortalAction::TotpConfirm => return self.totp_confirm(ctx, caller, f, enroll).await,
            PortalAction::Rename => ctl
                .rename_factor(caller, &field("factor_id"), &field("name"))
                .await
                .map(|rev| (rev, "renamed"))
                .map_err(|e| call_failure(&e)),
            PortalAction::Remove => {
                let r = ctl
                    .remove_own_factor(caller, &field("factor_id"))
                    .await
                    .map(|rev| (rev, "removed"))
                    .map_err(|e| call_failure(&e));
                if r.is_ok() {
                    self.record_event(caller, "factor.remove", "ok", rid, "", &field("factor_id"));
                }
                r
            }
            PortalAction::Revoke => {
                let target = if !field("session_id").is_empty() {
                    pb::revocation_target::Target::SessionId(field("session_id"))
                } else {
                    pb::revocation_target::Target::DeviceId(field("device_id"))
                };
                ctl.revoke_own(
                    caller.user_ref(),
                    target,
                    "revoked by its user in the portal",
                )
                .await
                .map(|rev| (rev, "revoked"))
                .map_err(|e| call_failure(&e))
            }
        };
        match outcome {
            Ok((revision, done)) => {
                self.wait_applied(revision).await;
                Ok(redirect(StatusCode::SEE_OTHER, &portal_after(done, &rd)))
            }
            Err(msg) => {
                let at = PortalPage {
                    rd: Some(&rd).filter(|r| !r.is_empty()).map(String::as_str),
                    error: Some(&msg),
                    ..Default::default()
                };
                let mut r = self.portal(ctx, caller, at).await;
                *r.status_mut() = StatusCode::BAD_REQUEST;
                Ok(r)
            }
        }
    }

    fn enrollment_needs_code(&self, view: &View) -> bool {
        view.policy
            .as_ref()
            .is_some_and(|(_, p)| p.mfa_policy().enrollment_requires_code)
    }
}
