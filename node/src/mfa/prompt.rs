//! The MFA prompt: what the application the user is going to asks for, the user's factors it
//! accepts (or the step-up when none does), and the lockout when there is one.

use http::{Response, StatusCode};

use palisade_edge_core::Caller;

use crate::http::Gateway;
use crate::http::context::RequestCtx;
use crate::http::csrf::csrf_token;
use crate::http::framing::{enc, redirect};
use crate::mfa::{
    PORTAL, core_mfa, kind_name, locked_until, lockout_text, method_label, user_factors,
};
use crate::pages::{self, escape};
use crate::proxy::Body;
use palisade_policy::catalog::FactorKind;

impl Gateway {
    /// The MFA prompt.
    pub(crate) fn mfa_prompt(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        rd: &str,
        error: Option<&str>,
    ) -> Response<Body> {
        let (view, rid, now) = (&*ctx.view, ctx.rid.as_str(), ctx.now);
        let Some(need) = self.need(ctx, caller, rd) else {
            // Nothing (more) to pass: back to where the user was going.
            return redirect(StatusCode::SEE_OTHER, rd);
        };
        let factors = user_factors(view, caller);
        let usable = core_mfa::eligible(&factors, &need.methods);
        let csrf = csrf_token(&caller.session.sid);
        // What the application accepts is spelled out only when the user has none of it to
        // offer (so they know what to add); otherwise the page offers just what they hold.
        let mut body = if usable.is_empty() {
            let wanted: Vec<&str> = need.methods.iter().map(|m| method_label(*m)).collect();
            format!(
                "<p><strong>{}</strong> asks for a second factor: {}.</p>",
                escape(&need.app_name),
                escape(&wanted.join(", or "))
            )
        } else {
            format!(
                "<p><strong>{}</strong> asks for a second factor.</p>",
                escape(&need.app_name)
            )
        };
        if let Some(e) = error {
            body.push_str(&format!("<p class=error role=alert>{}</p>", escape(e)));
        }
        let portal_link = format!("{PORTAL}?rd={}", enc(rd));
        if let Some(until) = locked_until(view, caller, now) {
            body.push_str(&format!(
                "<p class=error>{}</p>",
                escape(&lockout_text(until, now))
            ));
            return pages::page(StatusCode::TOO_MANY_REQUESTS, "Second factor", &body, rid);
        }
        if factors.is_empty() {
            body.push_str(&format!(
                "<p>You have no second factor yet.</p><p><a class=button href=\"{}\">Set one up</a></p>",
                escape(&portal_link)
            ));
            return pages::page(StatusCode::UNAUTHORIZED, "Second factor", &body, rid);
        }
        if usable.is_empty() {
            let have: Vec<String> = factors
                .iter()
                .map(|f| format!("{} ({})", f.name, kind_name(f.kind)))
                .collect();
            body.push_str(&format!(
                "<p id=step-up>Step-up needed: none of your factors ({}) is accepted here. \
                 Add one that is in your account settings, then come back.</p>\
                 <p><a class=button href=\"{}\">Open account settings</a></p>",
                escape(&have.join(", ")),
                escape(&portal_link)
            ));
            return pages::page(StatusCode::FORBIDDEN, "Stronger factor needed", &body, rid);
        }
        if usable.iter().any(|f| f.kind == FactorKind::Totp) {
            body.push_str(&format!(
                "<form method=post action=\"/.palisade/mfa/totp\">\
                 <input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=rd value=\"{rd}\">\
                 <label>Code from your authenticator app<br><input name=code id=code inputmode=numeric autocomplete=one-time-code pattern=\"[0-9 ]*\" maxlength=8 required autofocus></label>\
                 <button type=submit>Verify</button></form>",
                rd = escape(rd),
            ));
        }
        if usable.iter().any(|f| f.kind != FactorKind::Totp) {
            let keys = usable.iter().any(|f| f.kind == FactorKind::SecurityKey);
            let device = usable.iter().any(|f| f.kind == FactorKind::Platform);
            let label = match (keys, device) {
                (true, true) => "Use your security key or this device",
                (true, false) => "Use your security key",
                _ => "Use this device (Touch ID, Windows Hello)",
            };
            body.push_str(&format!(
                "<p><button type=button id=webauthn-auth data-rd=\"{}\">{label}</button> <button type=button id=cancel-webauthn class=small hidden>Cancel</button></p><p id=status role=status></p>",
                escape(rd)
            ));
        }
        body.push_str(&format!(
            "<p class=muted><a href=\"{}\">Manage your factors</a></p>",
            escape(&portal_link)
        ));
        pages::interactive(StatusCode::UNAUTHORIZED, "Second factor", &body, &csrf, rid)
    }
}
