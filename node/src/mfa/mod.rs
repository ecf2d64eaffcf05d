//! Palisade's own second factor at the edge, and the self-service portal.
//!
//! Reserved paths on every application host (all need a signed-in session):
//!
//! - `GET /.palisade/mfa?rd=PATH`: the MFA prompt for the application at `PATH`, offering the
//!   user's factors that application accepts (or explaining the step-up when none does);
//! - `POST /.palisade/mfa/totp`, `POST /.palisade/mfa/webauthn/{begin,finish}`: passing a factor
//!   issues the MFA assertion cookie, bound to the session, with its own lifetime;
//! - `GET /.palisade/portal` and `POST /.palisade/portal/...`: factors (add TOTP with a QR code,
//!   add a security key or this device's platform authenticator, rename, remove), recent sign-in
//!   and MFA attempts, the user's sessions and devices (revocable).
//!
//! The edge keeps nothing: TOTP codes are checked by the controllers (which hold the seeds and
//! record the time step, so a code works once at one edge), WebAuthn ceremony state travels in a
//! sealed, five-minute cookie, and the counter and answered challenge of every assertion are
//! recorded through the controllers before the assertion counts. A ceremony is used once: a
//! failed answer uses up its challenge too, and once a user is locked out nothing more is
//! recorded. A TOTP enrollment is bound to the browser that began it (a secret in a sealed
//! cookie whose hash the controllers keep), and confirming it is not passing a factor.
//! Requests are rate-limited per user.

mod events;
mod portal;
mod prompt;
mod register;
mod totp;
pub(crate) mod webauthn;

use std::borrow::Cow;

use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use palisade_edge_core::enforce::Verdict;
use palisade_edge_core::mfa as core_mfa;
use palisade_edge_core::reserved::{ReservedPath, Step};
use palisade_edge_core::{Caller, View};
use palisade_policy::catalog::{FactorKind, FactorRecord};
use palisade_policy::document::MfaMethod;
use palisade_policy::token::{MfaClaims, TokenKind};

use crate::RESERVED;
use crate::cookie;
use crate::http::context::RequestCtx;
use crate::http::csrf::guard;
use crate::http::error::EdgeError;
use crate::http::framing::{enc, query_param, safe_return_to};
use crate::http::{Gateway, limited};
use crate::proxy::Body;
pub(crate) use portal::PortalPage;

pub use palisade_edge_core::mfa::RECENT_SECS;
pub use palisade_edge_core::reserved::PORTAL;
pub use totp::{ENROLL_COOKIE, qr_svg};
pub use webauthn::CEREMONY_COOKIE;

/// MFA assertion lifetime when no application names one (the portal).
const DEFAULT_MFA_SECS: i64 = 12 * 3600;

type Answer = Result<Response<Body>, EdgeError>;

/// What the MFA prompt should offer.
struct Need {
    app_name: String,
    methods: Vec<MfaMethod>,
    user_verification: bool,
}

/// A refusal of one of the MFA or portal endpoints (a page or JSON, as the route renders).
fn refuse(status: StatusCode, text: &str) -> EdgeError {
    EdgeError::refused(status, "Refused", Cow::Owned(text.to_string()))
}

/// The controllers cannot check or record a factor right now.
fn unreachable() -> EdgeError {
    EdgeError::refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "your second factor cannot be checked right now; try again in a moment",
    )
}

fn method_label(m: MfaMethod) -> &'static str {
    match m {
        MfaMethod::Totp => "an authenticator app code",
        MfaMethod::SecurityKey => "a security key",
        MfaMethod::Platform => "this device's built-in authenticator (Touch ID, Windows Hello)",
    }
}

/// The portal after a change: what was done, and where the user was going (if anywhere), so
/// the portal can offer the way back.
fn portal_after(done: &str, rd: &str) -> String {
    if rd.is_empty() {
        format!("{PORTAL}?done={done}")
    } else {
        format!("{PORTAL}?done={done}&rd={}", enc(rd))
    }
}

/// The portal, remembering where the user was going.
fn portal_with(rd: Option<&str>) -> String {
    match rd {
        Some(rd) if !rd.is_empty() => format!("{PORTAL}?rd={}", enc(rd)),
        _ => PORTAL.to_string(),
    }
}

/// The `rd` a portal form carried along (a safe local path), or empty.
fn submitted_rd(f: &crate::http::csrf::Submitted) -> String {
    let rd = f.field("rd");
    if rd.is_empty() {
        rd
    } else {
        safe_return_to(&rd)
    }
}

/// The user's usable factors, oldest first.
fn user_factors<'a>(view: &'a View, c: &Caller) -> Vec<&'a FactorRecord> {
    view.user_factors(&c.user())
}

fn counters_slot(c: &Caller) -> String {
    format!("{}\u{0}{}", c.session.idp, c.session.sub)
}

/// Until when the user is locked out of MFA (unix seconds), if now.
fn locked_until(view: &View, c: &Caller, now: i64) -> Option<i64> {
    core_mfa::locked_until(view, &c.user(), now)
}

fn lockout_text(until: i64, now: i64) -> String {
    if until - now > 365 * 86_400 {
        "Too many failed attempts: your second factor is locked. Ask your administrator to unlock it."
            .into()
    } else {
        format!(
            "Too many failed attempts: try again in {} seconds.",
            (until - now).max(1)
        )
    }
}

/// Why an `EdgeAuth` call failed, in words for the user (never the controller's internals
/// beyond the refusal message written for users).
fn call_failure(e: &crate::controllers::CallError) -> String {
    match e {
        crate::controllers::CallError::Refused(s)
            if matches!(
                s.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::PermissionDenied
                    | tonic::Code::NotFound
            ) =>
        {
            s.message().to_string()
        }
        _ => "the change could not be recorded right now; try again in a moment".into(),
    }
}

fn fmt_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn kind_name(kind: FactorKind) -> &'static str {
    match kind {
        FactorKind::Totp => "authenticator app",
        FactorKind::SecurityKey => "security key",
        FactorKind::Platform => "device (Touch ID, Windows Hello)",
    }
}

/// The MFA assertion cookie: bound to the session, its own lifetime (the application's
/// `mfa.max_age`), never beyond the session's.
fn issue_mfa(
    view: &View,
    caller: &Caller,
    method: MfaMethod,
    factor_id: &str,
    user_verified: bool,
    lifetime_secs: i64,
    now: i64,
) -> Option<HeaderValue> {
    let exp = (now + lifetime_secs).min(caller.session.exp);
    let claims = MfaClaims {
        sid: caller.session.sid.clone(),
        sub: caller.session.sub.clone(),
        method,
        factor_id: factor_id.to_string(),
        auth_time: now,
        exp,
        uv: user_verified || method == MfaMethod::Platform,
    };
    let token = view.keyring.sign(TokenKind::Mfa, &claims).ok()?;
    Some(cookie::set(cookie::MFA, &token, exp - now))
}

/// The MFA assertion lifetime for the application at `rd` (its `mfa.max_age`).
pub(crate) fn mfa_lifetime(ctx: &RequestCtx, rd: &str) -> i64 {
    let (policy, host) = (&*ctx.policy, ctx.host.as_str());
    let path = rd.split('?').next().unwrap_or("/");
    policy
        .route(host, path)
        .map(|a| i64::try_from(a.mfa.max_age.as_secs()).unwrap_or(0))
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_MFA_SECS)
}
impl Gateway {
    /// Handles `/.palisade/mfa...` and `/.palisade/portal...`: a signed-in session is needed
    /// (without one, sign in first and come back), requests are limited per user, and every
    /// state-changing one passes the origin and anti-CSRF guard first.
    pub(crate) async fn mfa_routes(
        &self,
        ctx: &RequestCtx,
        reserved: ReservedPath,
        req: Request<Body>,
    ) -> Answer {
        let (req, body) = req.into_parts();
        let Some(caller) = self.caller(ctx, &req.headers) else {
            return self.sign_in_first(ctx, reserved, &req).await;
        };
        // Per user: a stolen session cannot drive the controllers faster than this.
        let limiter = if reserved.is_portal() {
            &self.limits.portal
        } else {
            &self.limits.mfa
        };
        limited(limiter, &counters_slot(&caller), &ctx.rid)?;
        let method = req.method.clone();
        match (method, reserved) {
            (Method::GET, ReservedPath::MfaPrompt) => {
                let rd = safe_return_to(
                    &query_param(req.uri.query(), "rd").unwrap_or_else(|| "/".into()),
                );
                Ok(self.mfa_prompt(ctx, &caller, &rd, None))
            }
            (Method::GET, ReservedPath::Portal) => {
                let done = query_param(req.uri.query(), "done");
                let rd = query_param(req.uri.query(), "rd").map(|rd| safe_return_to(&rd));
                let at = PortalPage {
                    done: done.as_deref(),
                    rd: rd.as_deref(),
                    error: None,
                };
                Ok(self.portal(ctx, &caller, at).await)
            }
            (Method::POST, r) if r.changes_state() => {
                let ceremony = cookie::get(&req.headers, CEREMONY_COOKIE).map(str::to_string);
                let enroll = cookie::get(&req.headers, ENROLL_COOKIE).map(str::to_string);
                let json = matches!(
                    r,
                    ReservedPath::MfaWebauthn(_) | ReservedPath::PortalWebauthn(_)
                );
                let submitted = guard(&req, body, &ctx.authority, &caller, json).await?;
                match r {
                    ReservedPath::MfaTotp => {
                        let rd = safe_return_to(&submitted.field("rd"));
                        let code = submitted.field("code");
                        self.verify_totp(ctx, &caller, &rd, &code).await
                    }
                    ReservedPath::MfaWebauthn(Step::Begin) => {
                        self.webauthn_auth_begin(ctx, &caller, submitted.json())
                    }
                    ReservedPath::MfaWebauthn(Step::Finish) => {
                        self.webauthn_auth_finish(
                            ctx,
                            &caller,
                            submitted.json(),
                            ceremony.as_deref(),
                        )
                        .await
                    }
                    ReservedPath::PortalWebauthn(Step::Begin) => {
                        self.webauthn_register_begin(ctx, &caller, submitted.json())
                    }
                    ReservedPath::PortalWebauthn(Step::Finish) => {
                        self.webauthn_register_finish(
                            ctx,
                            &caller,
                            submitted.json(),
                            ceremony.as_deref(),
                        )
                        .await
                    }
                    ReservedPath::PortalAction(action) => {
                        self.portal_action(ctx, &caller, action, &submitted, enroll.as_deref())
                            .await
                    }
                    _ => Err(EdgeError::NotFound),
                }
            }
            (m, _) if m != Method::GET && m != Method::POST => Err(EdgeError::MethodNotAllowed(
                "this page only answers GET and POST",
            )),
            _ => Err(EdgeError::NotFound),
        }
    }

    /// Without a session: sign in for the application the user was going to (or the host's
    /// root application), then come back here.
    async fn sign_in_first(&self, ctx: &RequestCtx, reserved: ReservedPath, req: &Parts) -> Answer {
        let rd = safe_return_to(
            &query_param(req.uri.query(), "rd").unwrap_or_else(|| PORTAL.to_string()),
        );
        let app_path = if rd.starts_with(RESERVED) {
            "/"
        } else {
            rd.split('?').next().unwrap_or("/")
        };
        let app = ctx
            .policy
            .route(&ctx.host, app_path)
            .or_else(|| ctx.policy.route(&ctx.host, "/"))
            .ok_or(EdgeError::NoApplication)?;
        let providers: Vec<String> = if app.identity_providers.is_empty() {
            ctx.policy
                .identity_providers()
                .iter()
                .map(|p| p.id.clone())
                .collect()
        } else {
            app.identity_providers.clone()
        };
        let return_to = if req.method == Method::GET {
            match req.uri.query() {
                Some(q) => format!("{}?{q}", reserved.path()),
                None => reserved.path().to_string(),
            }
        } else {
            PORTAL.to_string()
        };
        self.challenge_login(ctx, req, app, &providers, &return_to)
            .await
    }

    /// What the application at `rd` needs from this caller, or `None` when it needs no (more)
    /// MFA. The portal itself (adding or removing factors) accepts any factor passed within
    /// the last 10 minutes.
    fn need(&self, ctx: &RequestCtx, caller: &Caller, rd: &str) -> Option<Need> {
        let (policy, host, peer, now) = (&*ctx.policy, ctx.host.as_str(), ctx.peer, ctx.now);
        let path = rd.split('?').next().unwrap_or("/");
        if path.starts_with(RESERVED) {
            return Some(Need {
                app_name: "your Palisade account".into(),
                methods: MfaMethod::ALL.to_vec(),
                user_verification: false,
            });
        }
        let app = policy.route(host, path)?;
        match palisade_edge_core::enforce::verdict(
            app,
            Some(caller.clone()),
            ctx.device_for_decision().as_ref(),
            peer.ip(),
            ctx.transport,
            self.replica.staleness(),
            now,
        ) {
            Verdict::Mfa { methods, .. } => Some(Need {
                app_name: app.name.to_string(),
                methods,
                user_verification: app.mfa.user_verification,
            }),
            _ => None,
        }
    }
}
