//! TOTP at the edge: passing a code (checked by the controllers, which hold the seeds and
//! record the time step, so a code works once at one edge), and adding an authenticator app
//! from the portal. A TOTP enrollment is bound to the browser that began it (a secret in a
//! sealed cookie whose hash the controllers keep), and confirming it is not passing a factor.

use http::header;
use http::{Response, StatusCode};
use palisade_edge_core::Caller;
use palisade_policy::document::MfaMethod;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::Url;

use crate::controllers::api::{PendingTotp, TotpOutcome};
use crate::cookie;
use crate::http::Gateway;
use crate::http::context::RequestCtx;
use crate::http::csrf::{Submitted, csrf_token};
use crate::http::framing::redirect;
use crate::mfa::{
    Answer, PortalPage, call_failure, issue_mfa, lockout_text, mfa_lifetime, portal_after,
    submitted_rd, unreachable,
};
use crate::pages::{self, escape};
use crate::proxy::Body;

/// The cookie binding a pending TOTP enrollment to the browser that began it.
pub const ENROLL_COOKIE: &str = "__Host-palisade-enroll";
/// The uniform answer to every refused first code of an enrollment.
const CONFIRM_REFUSED: &str = "That code was not accepted. Check the authenticator's clock and enter the next code, or start again.";

/// A pending TOTP enrollment, sealed into `ENROLL_COOKIE`.
#[derive(Debug, Serialize, Deserialize)]
struct Enrollment {
    /// The session that began it.
    sid: String,
    /// The pending factor.
    factor_id: String,
    /// The secret whose SHA-256 the controllers keep, base64url.
    binding: String,
}

impl Gateway {
    pub(crate) async fn verify_totp(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        rd: &str,
        code: &str,
    ) -> Answer {
        let (view, host, rid, now) = (&*ctx.view, ctx.host.as_str(), ctx.rid.as_str(), ctx.now);
        let Some(ctl) = &self.controllers else {
            return Err(unreachable());
        };
        let started = std::time::Instant::now();
        let r = ctl.verify_totp(caller, code, rid).await;
        metrics::histogram!("palisade_edge_totp_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        let (outcome, factor_id) = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "TOTP verification unavailable");
                return Err(unreachable());
            }
        };
        self.record_event(caller, "mfa.totp", outcome.name(), rid, host, &factor_id);
        let error = match &outcome {
            TotpOutcome::Passed { factor_id } => {
                // The step is recorded: at most this edge's replica is behind, which does not
                // matter for the cookie.
                let lifetime = mfa_lifetime(ctx, rd);
                let cookie = issue_mfa(
                    view,
                    caller,
                    MfaMethod::Totp,
                    factor_id,
                    false,
                    lifetime,
                    now,
                )
                .ok_or_else(unreachable)?;
                tracing::info!(request_id = %rid, subject = %caller.session.sub, factor = %factor_id, "TOTP passed");
                let mut resp = redirect(StatusCode::SEE_OTHER, rd);
                resp.headers_mut().append(header::SET_COOKIE, cookie);
                return Ok(resp);
            }
            TotpOutcome::Invalid { failed_attempts } => {
                format!("That code is not right. Failed attempts in a row: {failed_attempts}.")
            }
            TotpOutcome::Replayed => {
                "That code was already used. Wait for the next code and try again.".into()
            }
            TotpOutcome::LockedOut { until } => lockout_text(*until, now),
            TotpOutcome::NoFactor => "You have no authenticator app enrolled.".into(),
            TotpOutcome::Unchecked => "The code could not be checked.".into(),
        };
        tracing::info!(request_id = %rid, subject = %caller.session.sub, result = outcome.name(), "TOTP refused");
        let mut page = self.mfa_prompt(ctx, caller, rd, Some(&error));
        if matches!(outcome, TotpOutcome::LockedOut { .. }) {
            *page.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        }
        Ok(page)
    }

    /// `POST /.palisade/portal/totp/begin`: a pending factor and its QR code.
    pub(crate) async fn totp_begin(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        f: &Submitted,
    ) -> Answer {
        let (view, rid, now) = (&*ctx.view, ctx.rid.as_str(), ctx.now);
        let Some(ctl) = &self.controllers else {
            return Err(unreachable());
        };
        // The browser keeps a secret whose hash the controllers keep with the pending
        // factor: only this browser can confirm it.
        let Ok(secret) = crate::oidc::random_token() else {
            return Err(unreachable());
        };
        let binding: String = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let pending = match ctl
            .begin_totp_enrollment(
                caller,
                &f.field("name"),
                &f.field("enrollment_code"),
                &binding,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let rd = submitted_rd(f);
                let at = PortalPage {
                    rd: Some(rd.as_str()).filter(|r| !r.is_empty()),
                    error: Some(&call_failure(&e)),
                    ..Default::default()
                };
                return Ok(self.portal(ctx, caller, at).await);
            }
        };
        let bound = Enrollment {
            sid: caller.session.sid.clone(),
            factor_id: pending.factor_id.clone(),
            binding: secret,
        };
        let ttl = palisade_policy::catalog::PENDING_TOTP_MS / 1000;
        let form = ConfirmForm {
            csrf: &csrf_token(&caller.session.sid),
            rd: &submitted_rd(f),
        };
        let mut page = totp_enrollment_page(&pending, form, None, rid);
        let sealed =
            cookie::seal(&view.keyring, "enroll", &bound, now + ttl).map_err(|_| unreachable())?;
        page.headers_mut()
            .append(header::SET_COOKIE, cookie::set(ENROLL_COOKIE, &sealed, ttl));
        Ok(page)
    }

    /// `POST /.palisade/portal/totp/confirm`: the first code of the pending factor, from the
    /// browser that began it.
    pub(crate) async fn totp_confirm(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        f: &Submitted,
        enroll: Option<&str>,
    ) -> Answer {
        let (view, rid, now) = (&*ctx.view, ctx.rid.as_str(), ctx.now);
        let Some(ctl) = &self.controllers else {
            return Err(unreachable());
        };
        let field = |k: &str| f.field(k);
        let factor_id = field("factor_id");
        let (csrf, rd) = (csrf_token(&caller.session.sid), submitted_rd(f));
        let form = ConfirmForm {
            csrf: &csrf,
            rd: &rd,
        };
        let again = |msg: &str| {
            // Show the same QR again with the error; the pending factor stays.
            let again = PendingTotp {
                factor_id: factor_id.clone(),
                provisioning_uri: field("uri"),
            };
            totp_enrollment_page(&again, form, Some(msg), rid)
        };
        let pending: Option<Enrollment> = enroll
            .and_then(|e| cookie::open(&view.keyring, "enroll", e, now).ok())
            .filter(|p: &Enrollment| {
                use subtle::ConstantTimeEq;
                bool::from(p.sid.as_bytes().ct_eq(caller.session.sid.as_bytes()))
                    && p.factor_id == factor_id
            });
        // Without the binding, the controllers are not asked: the answer is the same.
        let Some(pending) = pending else {
            return Ok(again(CONFIRM_REFUSED));
        };
        match ctl
            .confirm_totp_enrollment(caller, &factor_id, &field("code"), &pending.binding)
            .await
        {
            Ok(revision) => {
                self.wait_applied(revision).await;
                self.record_event(caller, "factor.add", "ok", rid, "", &factor_id);
                // Confirming the new factor is not passing it: no MFA assertion here.
                let mut resp = redirect(StatusCode::SEE_OTHER, &portal_after("added", &rd));
                resp.headers_mut()
                    .append(header::SET_COOKIE, cookie::clear(ENROLL_COOKIE));
                Ok(resp)
            }
            Err(crate::controllers::CallError::Refused(_)) => Ok(again(CONFIRM_REFUSED)),
            Err(e) => Ok(again(&call_failure(&e))),
        }
    }
}

/// What the confirmation form carries: the anti-CSRF token and where the user was going.
#[derive(Debug, Clone, Copy)]
struct ConfirmForm<'a> {
    csrf: &'a str,
    rd: &'a str,
}

/// The page that shows a new TOTP seed (QR code and text) and asks for a first code.
fn totp_enrollment_page(
    r: &PendingTotp,
    form: ConfirmForm<'_>,
    error: Option<&str>,
    rid: &str,
) -> Response<Body> {
    let secret = Url::parse(&r.provisioning_uri)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "secret")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    let qr = qr_svg(&r.provisioning_uri).unwrap_or_default();
    let mut body = String::from(
        "<p>Scan this code with your authenticator app (Google Authenticator, 1Password, Authy...), then enter the code it shows.</p>",
    );
    if let Some(e) = error {
        body.push_str(&format!("<p class=error role=alert>{}</p>", escape(e)));
    }
    body.push_str(&format!(
        "<div class=qr>{qr}</div><p class=muted>Can't scan? Enter this key: <code id=totp-secret>{}</code></p>\
         <form method=post action=\"/.palisade/portal/totp/confirm\"><input type=hidden name=csrf value=\"{}\">\
         <input type=hidden name=rd value=\"{}\"><input type=hidden name=factor_id value=\"{}\"><input type=hidden name=uri value=\"{}\">\
         <label>Code<br><input name=code id=code inputmode=numeric autocomplete=one-time-code maxlength=8 required autofocus></label> <button type=submit>Confirm</button></form>\
         <p class=muted>Never share this page: the key is your second factor.</p>",
        escape(&secret),
        escape(form.csrf),
        escape(form.rd),
        escape(&r.factor_id),
        escape(&r.provisioning_uri),
    ));
    pages::page(StatusCode::OK, "Add an authenticator app", &body, rid)
}

/// A QR code as inline SVG (no image library, no external asset).
pub fn qr_svg(text: &str) -> Option<String> {
    let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium).ok()?;
    let size = qr.size();
    let border = 4;
    let dim = size + border * 2;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {dim} {dim}\" width=\"220\" height=\"220\" role=img aria-label=\"QR code\" shape-rendering=crispEdges><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_render() {
        let svg = qr_svg("otpauth://totp/Palisade:alice?secret=JBSWY3DPEHPK3PXP&issuer=Palisade")
            .expect("qr");
        assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"));
    }
}
