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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use palisade_policy::document::MfaMethod;
use palisade_policy::token::{MfaClaims, TokenKind};
use palisade_policy::{CompiledApp, CompiledPolicy};
use palisade_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    AuthenticatorAttachment, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, SecurityKeyAuthentication,
    SecurityKeyRegistration, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::controllers::Retry;
use crate::cookie;
use crate::gateway::{
    Caller, Gateway, RESERVED, UserRefOf, now_secs, query_param, redirect, safe_return_to,
};
use crate::pages::{self, escape};
use crate::proxy::{Body, full};
use crate::replica::View;
use palisade_edge_core::enforce::{Transport, Verdict};
use palisade_edge_core::mfa as core_mfa;
use palisade_edge_core::reserved::{PortalAction, ReservedPath, Step};
use palisade_policy::catalog::{DeviceRecord, FactorKind, FactorRecord};

/// The WebAuthn ceremony cookie.
pub const CEREMONY_COOKIE: &str = "__Host-palisade-webauthn";
/// The cookie binding a pending TOTP enrollment to the browser that began it.
pub const ENROLL_COOKIE: &str = "__Host-palisade-enroll";
/// The uniform answer to every refused first code of an enrollment.
const CONFIRM_REFUSED: &str = "That code was not accepted. Check the authenticator's clock and enter the next code, or start again.";
/// How long a WebAuthn ceremony may take.
const CEREMONY_SECS: i64 = 300;
/// Largest form or JSON body the MFA and portal endpoints read.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Passing a factor this recently allows adding or removing factors (the controllers keep
/// the authoritative record; the edge uses the same window to decide what to offer).
pub use palisade_edge_core::mfa::RECENT_SECS;
/// MFA assertion lifetime when no application names one (the portal).
const DEFAULT_MFA_SECS: i64 = 12 * 3600;
pub use palisade_edge_core::reserved::PORTAL;

/// The browser half of the WebAuthn ceremonies, served from the edge itself (no CDN).
const WEBAUTHN_JS: &str = include_str!("webauthn.js");

/// A WebAuthn ceremony in progress, sealed into a cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Ceremony {
    /// The session it belongs to.
    sid: String,
    /// `register` or `authenticate`.
    purpose: String,
    /// For registration: `security_key` or `platform`.
    kind: String,
    /// For registration: the factor's name and enrollment code.
    name: String,
    code: String,
    /// For authentication: where to go afterwards, and whether user verification was
    /// required (a passkey ceremony).
    rd: String,
    uv: bool,
    /// The webauthn-rs state.
    state: Value,
    /// The challenge, base64url.
    challenge: String,
}

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

/// What the MFA prompt should offer.
struct Need {
    app_name: String,
    methods: Vec<MfaMethod>,
    user_verification: bool,
}

fn json_response(status: StatusCode, v: Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_error(status: StatusCode, msg: &str) -> Response<Body> {
    json_response(status, json!({ "error": msg }))
}

/// The anti-CSRF token of a session: every form and fetch must carry it. It is derived from
/// the session id, which scripts on other sites cannot read (the cookie is HttpOnly and
/// `__Host-`); SameSite=Lax already keeps the session cookie off cross-site POSTs.
pub fn csrf_token(sid: &str) -> String {
    let d = Sha256::digest(format!("palisade/csrf/v1\0{sid}").as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..18])
}

fn method_label(m: MfaMethod) -> &'static str {
    match m {
        MfaMethod::Totp => "an authenticator app code",
        MfaMethod::SecurityKey => "a security key",
        MfaMethod::Platform => "this device's built-in authenticator (Touch ID, Windows Hello)",
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

/// A stable WebAuthn user handle for an SSO identity (no personal data in it).
fn user_handle(c: &Caller) -> Uuid {
    let d = Sha256::digest(format!("{}\0{}", c.session.idp, c.session.sub).as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

/// The relying party for a request: the policy's `mfa.webauthn_rp_id`, or the host itself;
/// the origin is exactly the one the browser used.
fn relying_party(policy: &CompiledPolicy, authority: &str, host: &str) -> Option<Webauthn> {
    let origin = Url::parse(&format!("https://{authority}")).ok()?;
    let rp_id = policy
        .mfa_policy()
        .webauthn_rp_id
        .clone()
        .unwrap_or_else(|| host.to_string());
    WebauthnBuilder::new(&rp_id, &origin)
        .ok()?
        .rp_name("Palisade")
        .build()
        .ok()
}

fn no_relying_party() -> Response<Body> {
    json_error(
        StatusCode::BAD_REQUEST,
        "WebAuthn is not possible on this host name",
    )
}

/// Opens the ceremony cookie for `purpose` and builds the relying party, or the error answer.
#[allow(clippy::too_many_arguments)]
fn ceremony_and_rp(
    view: &View,
    policy: &CompiledPolicy,
    authority: &str,
    host: &str,
    caller: &Caller,
    sealed: Option<&str>,
    purpose: &str,
    expired: &str,
) -> Result<(Ceremony, Webauthn), Box<Response<Body>>> {
    let c = open_ceremony(view, sealed, caller, purpose, now_secs())
        .ok_or_else(|| Box::new(json_error(StatusCode::BAD_REQUEST, expired)))?;
    let wa = relying_party(policy, authority, host).ok_or_else(|| Box::new(no_relying_party()))?;
    Ok((c, wa))
}

fn challenge_of(options: &Value) -> String {
    options["publicKey"]["challenge"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Reads a form or JSON body: at most `MAX_FORM_BYTES`, within `BODY_SECS`.
pub(crate) async fn read_body(req: Request<Incoming>) -> Option<Vec<u8>> {
    const BODY_SECS: u64 = 10;
    let limited = http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES);
    let collected = tokio::time::timeout(Duration::from_secs(BODY_SECS), limited.collect())
        .await
        .ok()?;
    Some(collected.ok()?.to_bytes().to_vec())
}

/// Whether a state-changing request comes from this origin (or names none, as non-browser
/// clients do; the anti-CSRF token is checked as well).
pub(crate) fn same_origin<B>(req: &Request<B>, authority: &str) -> bool {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|o| o.eq_ignore_ascii_case(&format!("https://{authority}")))
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
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

impl Gateway {
    /// Handles `/.palisade/mfa...` and `/.palisade/portal...`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn mfa_routes(
        &self,
        req: Request<Incoming>,
        view: &View,
        policy: &CompiledPolicy,
        authority: &str,
        host: &str,
        reserved: ReservedPath,
        peer: SocketAddr,
        rid: &str,
    ) -> Response<Body> {
        if reserved == ReservedPath::WebauthnJs {
            let mut r = Response::new(full(WEBAUTHN_JS));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            );
            return r;
        }
        let now = now_secs();
        let caller = self.caller(&req, view, host, now);
        let Some(caller) = caller else {
            let rd = safe_return_to(
                &query_param(req.uri().query(), "rd").unwrap_or_else(|| PORTAL.to_string()),
            );
            let app_path = if rd.starts_with(RESERVED) {
                "/"
            } else {
                rd.split('?').next().unwrap_or("/")
            };
            let Some(app) = policy
                .route(host, app_path)
                .or_else(|| policy.route(host, "/"))
            else {
                return pages::message(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "no application is served at this address",
                    rid,
                );
            };
            let providers: Vec<String> = if app.identity_providers.is_empty() {
                policy
                    .identity_providers()
                    .iter()
                    .map(|p| p.id.clone())
                    .collect()
            } else {
                app.identity_providers.clone()
            };
            let return_to = if *req.method() == Method::GET {
                match req.uri().query() {
                    Some(q) => format!("{}?{q}", reserved.path()),
                    None => reserved.path().to_string(),
                }
            } else {
                PORTAL.to_string()
            };
            return self
                .challenge_login(
                    &req, view, policy, app, &providers, authority, &return_to, rid,
                )
                .await;
        };
        let method = req.method().clone();
        // Per user: a stolen session cannot drive the controllers faster than this.
        let limiter = if reserved.is_portal() {
            &self.limits.portal
        } else {
            &self.limits.mfa
        };
        if let Err(r) = crate::gateway::limited(limiter, &counters_slot(&caller), rid) {
            return *r;
        }
        if method == Method::POST {
            // Same-origin only, and the session's anti-CSRF token.
            if !same_origin(&req, authority) {
                return cross_site_refused(rid);
            }
        }
        match (method, reserved) {
            (Method::GET, ReservedPath::MfaPrompt) => {
                let rd = safe_return_to(
                    &query_param(req.uri().query(), "rd").unwrap_or_else(|| "/".into()),
                );
                self.mfa_prompt(view, policy, host, &caller, &rd, peer, None, rid)
            }
            (Method::POST, ReservedPath::MfaTotp) => {
                let Some(body) = read_body(req).await else {
                    return too_large(rid);
                };
                let f = form(&body);
                if !csrf_ok(f.get("csrf"), &caller) {
                    return csrf_refused(rid);
                }
                let rd = safe_return_to(f.get("rd").map(String::as_str).unwrap_or("/"));
                let code = f.get("code").cloned().unwrap_or_default();
                self.verify_totp(view, policy, host, &caller, &rd, &code, peer, rid)
                    .await
            }
            (Method::POST, ReservedPath::MfaWebauthn(step)) => {
                let csrf = req
                    .headers()
                    .get("x-palisade-csrf")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if !csrf_ok(csrf.as_ref(), &caller) {
                    return json_error(StatusCode::FORBIDDEN, "missing or wrong anti-CSRF token");
                }
                let ceremony = cookie::get(req.headers(), CEREMONY_COOKIE).map(str::to_string);
                let Some(body) = read_body(req).await else {
                    return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large");
                };
                let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                    return json_error(StatusCode::BAD_REQUEST, "the request is not JSON");
                };
                if step == Step::Begin {
                    self.webauthn_auth_begin(view, policy, authority, host, &caller, &body, peer)
                } else {
                    self.webauthn_auth_finish(
                        view,
                        policy,
                        authority,
                        host,
                        &caller,
                        &body,
                        ceremony.as_deref(),
                        rid,
                    )
                    .await
                }
            }
            (Method::GET, ReservedPath::Portal) => {
                let done = query_param(req.uri().query(), "done");
                self.portal(view, &caller, done.as_deref(), None, rid).await
            }
            (Method::POST, ReservedPath::PortalWebauthn(step)) => {
                let csrf = req
                    .headers()
                    .get("x-palisade-csrf")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if !csrf_ok(csrf.as_ref(), &caller) {
                    return json_error(StatusCode::FORBIDDEN, "missing or wrong anti-CSRF token");
                }
                let ceremony = cookie::get(req.headers(), CEREMONY_COOKIE).map(str::to_string);
                let Some(body) = read_body(req).await else {
                    return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large");
                };
                let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                    return json_error(StatusCode::BAD_REQUEST, "the request is not JSON");
                };
                match step {
                    Step::Begin => {
                        self.webauthn_register_begin(view, policy, authority, host, &caller, &body)
                    }
                    Step::Finish => {
                        self.webauthn_register_finish(
                            view,
                            policy,
                            authority,
                            host,
                            &caller,
                            &body,
                            ceremony.as_deref(),
                            rid,
                        )
                        .await
                    }
                }
            }
            (Method::POST, ReservedPath::PortalAction(action)) => {
                let enroll = cookie::get(req.headers(), ENROLL_COOKIE).map(str::to_string);
                let Some(body) = read_body(req).await else {
                    return too_large(rid);
                };
                let f = form(&body);
                if !csrf_ok(f.get("csrf"), &caller) {
                    return csrf_refused(rid);
                }
                self.portal_action(view, &caller, action, &f, enroll.as_deref(), rid)
                    .await
            }
            (m, _) if m != Method::GET && m != Method::POST => pages::message(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "this page only answers GET and POST",
                rid,
            ),
            _ => pages::message(
                StatusCode::NOT_FOUND,
                "Not found",
                "there is no such Palisade page",
                rid,
            ),
        }
    }

    /// What the application at `rd` needs from this caller, or `None` when it needs no (more)
    /// MFA. The portal itself (adding or removing factors) accepts any factor passed within
    /// the last 10 minutes.
    fn need(
        &self,
        policy: &CompiledPolicy,
        host: &str,
        caller: &Caller,
        rd: &str,
        peer: SocketAddr,
    ) -> Option<Need> {
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
            peer.ip(),
            Transport::H1,
            self.replica.staleness(),
            now_secs(),
        ) {
            Verdict::Mfa { methods, .. } => Some(Need {
                app_name: app.name.to_string(),
                methods,
                user_verification: app.mfa.user_verification,
            }),
            _ => None,
        }
    }

    fn mfa_lifetime(policy: &CompiledPolicy, host: &str, rd: &str) -> i64 {
        let path = rd.split('?').next().unwrap_or("/");
        policy
            .route(host, path)
            .map(|a: &CompiledApp| i64::try_from(a.mfa.max_age.as_secs()).unwrap_or(0))
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_MFA_SECS)
    }

    /// The MFA prompt.
    #[allow(clippy::too_many_arguments)]
    fn mfa_prompt(
        &self,
        view: &View,
        policy: &CompiledPolicy,
        host: &str,
        caller: &Caller,
        rd: &str,
        peer: SocketAddr,
        error: Option<&str>,
        rid: &str,
    ) -> Response<Body> {
        let Some(need) = self.need(policy, host, caller, rd, peer) else {
            // Nothing (more) to pass: back to where the user was going.
            return redirect(StatusCode::SEE_OTHER, rd);
        };
        let now = now_secs();
        let factors = user_factors(view, caller);
        let usable = core_mfa::eligible(&factors, &need.methods);
        let csrf = csrf_token(&caller.session.sid);
        let wanted: Vec<&str> = need.methods.iter().map(|m| method_label(*m)).collect();
        let mut body = format!(
            "<p><strong>{}</strong> asks for a second factor: {}.</p>",
            escape(&need.app_name),
            escape(&wanted.join(", or "))
        );
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
                "<p><button type=button id=webauthn-auth data-rd=\"{}\">{label}</button></p><p id=status role=status></p>",
                escape(rd)
            ));
        }
        body.push_str(&format!(
            "<p class=muted><a href=\"{}\">Manage your factors</a></p>",
            escape(&portal_link)
        ));
        pages::interactive(StatusCode::UNAUTHORIZED, "Second factor", &body, &csrf, rid)
    }

    #[allow(clippy::too_many_arguments)]
    async fn verify_totp(
        &self,
        view: &View,
        policy: &CompiledPolicy,
        host: &str,
        caller: &Caller,
        rd: &str,
        code: &str,
        peer: SocketAddr,
        rid: &str,
    ) -> Response<Body> {
        let Some(ctl) = &self.controllers else {
            return unreachable_page(rid);
        };
        let req = pb::VerifyTotpRequest {
            user: Some(caller.user_ref()),
            code: code.chars().take(16).collect(),
            request_id: rid.to_string(),
        };
        let started = std::time::Instant::now();
        let r = ctl
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.verify_totp(req).await }
            })
            .await;
        metrics::histogram!("palisade_edge_totp_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "TOTP verification unavailable");
                return unreachable_page(rid);
            }
        };
        let now = now_secs();
        let result = pb::TotpResult::try_from(r.result).unwrap_or(pb::TotpResult::Unspecified);
        self.record_event(
            caller,
            "mfa.totp",
            totp_result_name(result),
            rid,
            host,
            &r.factor_id,
        );
        let error = match result {
            pb::TotpResult::Ok => {
                // The step is recorded: at most this edge's replica is behind, which does not
                // matter for the cookie.
                let lifetime = Self::mfa_lifetime(policy, host, rd);
                return match issue_mfa(
                    view,
                    caller,
                    MfaMethod::Totp,
                    &r.factor_id,
                    false,
                    lifetime,
                    now,
                ) {
                    Some(c) => {
                        tracing::info!(request_id = %rid, subject = %caller.session.sub, factor = %r.factor_id, "TOTP passed");
                        let mut resp = redirect(StatusCode::SEE_OTHER, rd);
                        resp.headers_mut().append(header::SET_COOKIE, c);
                        resp
                    }
                    None => unreachable_page(rid),
                };
            }
            pb::TotpResult::Invalid => format!(
                "That code is not right. Failed attempts in a row: {}.",
                r.failed_attempts
            ),
            pb::TotpResult::Replayed => {
                "That code was already used. Wait for the next code and try again.".into()
            }
            pb::TotpResult::LockedOut => {
                let until = r.locked_until.map(|t| t.seconds).unwrap_or(i64::MAX);
                lockout_text(until, now)
            }
            pb::TotpResult::NoFactor => "You have no authenticator app enrolled.".into(),
            pb::TotpResult::Unspecified => "The code could not be checked.".into(),
        };
        tracing::info!(request_id = %rid, subject = %caller.session.sub, result = totp_result_name(result), failed_attempts = r.failed_attempts, "TOTP refused");
        let mut page = self.mfa_prompt(view, policy, host, caller, rd, peer, Some(&error), rid);
        if result == pb::TotpResult::LockedOut {
            *page.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        }
        page
    }

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
            let req = pb::RecordAuthEventsRequest { events: vec![ev] };
            if let Err(e) = ctl
                .call(Retry::Safe, |mut c| {
                    let req = req.clone();
                    async move { c.record_auth_events(req).await }
                })
                .await
            {
                tracing::debug!(error = %e, "auth event not recorded");
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn webauthn_auth_begin(
        &self,
        view: &View,
        policy: &CompiledPolicy,
        authority: &str,
        host: &str,
        caller: &Caller,
        body: &Value,
        peer: SocketAddr,
    ) -> Response<Body> {
        let rd = safe_return_to(body["rd"].as_str().unwrap_or("/"));
        let now = now_secs();
        if let Some(until) = locked_until(view, caller, now) {
            return json_error(StatusCode::TOO_MANY_REQUESTS, &lockout_text(until, now));
        }
        let Some(need) = self.need(policy, host, caller, &rd, peer) else {
            return json_response(StatusCode::OK, json!({ "redirect": rd }));
        };
        let keys: Vec<&FactorRecord> =
            core_mfa::eligible(&user_factors(view, caller), &need.methods)
                .into_iter()
                .filter(|f| f.kind != FactorKind::Totp)
                .collect();
        if keys.is_empty() {
            return json_error(
                StatusCode::BAD_REQUEST,
                "you have no security key or device authenticator this application accepts",
            );
        }
        let Some(wa) = relying_party(policy, authority, host) else {
            return no_relying_party();
        };
        // User verification is required when the application asks for it or when only
        // platform authenticators are allowed (they always verify the user).
        let uv = need.user_verification || keys.iter().all(|f| f.kind == FactorKind::Platform);
        let credentials = keys.iter().map(|f| f.credential_json.as_str());
        let started = if uv {
            let passkeys: Vec<Passkey> = credentials
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect();
            wa.start_passkey_authentication(&passkeys)
                .map_err(|e| e.to_string())
                .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        } else {
            let keys: Vec<SecurityKey> = credentials
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect();
            wa.start_securitykey_authentication(&keys)
                .map_err(|e| e.to_string())
                .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        };
        let (Ok(options), Ok(state)) = (match started {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "WebAuthn authentication could not start");
                return json_error(StatusCode::BAD_REQUEST, "the ceremony could not start");
            }
        }) else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the ceremony could not start",
            );
        };
        let ceremony = Ceremony {
            sid: caller.session.sid.clone(),
            purpose: "authenticate".into(),
            kind: String::new(),
            name: String::new(),
            code: String::new(),
            rd,
            uv,
            challenge: challenge_of(&options),
            state,
        };
        ceremony_response(view, &ceremony, options, now)
    }

    #[allow(clippy::too_many_arguments)]
    async fn webauthn_auth_finish(
        &self,
        view: &View,
        policy: &CompiledPolicy,
        authority: &str,
        host: &str,
        caller: &Caller,
        body: &Value,
        sealed: Option<&str>,
        rid: &str,
    ) -> Response<Body> {
        let now = now_secs();
        // A locked user's answer is not checked, and nothing more about them is recorded.
        if let Some(until) = locked_until(view, caller, now) {
            return json_error(StatusCode::TOO_MANY_REQUESTS, &lockout_text(until, now));
        }
        let (c, wa) = match ceremony_and_rp(
            view,
            policy,
            authority,
            host,
            caller,
            sealed,
            "authenticate",
            "this security key prompt expired or belongs to another session; start again",
        ) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let Ok(cred) = serde_json::from_value::<PublicKeyCredential>(body["credential"].clone())
        else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "the authenticator's answer is malformed",
            );
        };
        let started = std::time::Instant::now();
        let result = if c.uv {
            serde_json::from_value::<PasskeyAuthentication>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_passkey_authentication(&cred, &s)
                        .map_err(|e| e.to_string())
                })
        } else {
            serde_json::from_value::<SecurityKeyAuthentication>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_securitykey_authentication(&cred, &s)
                        .map_err(|e| e.to_string())
                })
        };
        metrics::histogram!("palisade_edge_webauthn_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        let Some(ctl) = &self.controllers else {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the controllers are unreachable",
            );
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(request_id = %rid, subject = %caller.session.sub, error = %e, "WebAuthn assertion refused");
                // The failure uses up the ceremony's challenge: a replayed ceremony is not
                // counted (or recorded) again.
                let challenge = URL_SAFE_NO_PAD
                    .decode(c.challenge.trim_end_matches('='))
                    .unwrap_or_default();
                if self
                    .count_failure(ctl, caller, pb::FactorKind::SecurityKey, challenge, rid)
                    .await
                {
                    self.record_event(caller, "mfa.webauthn", "failed", rid, host, "");
                }
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "the security key's answer was not accepted",
                );
            }
        };
        let cred_id = URL_SAFE_NO_PAD.encode(result.cred_id());
        let Some(factor) = user_factors(view, caller)
            .into_iter()
            .find(|f| f.kind != FactorKind::Totp && f.credential_id == cred_id)
        else {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "this key is not one of your factors",
            );
        };
        let platform = factor.kind == FactorKind::Platform;
        if platform && !result.user_verified() {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "this device authenticator did not verify you",
            );
        }
        let Ok(challenge) = URL_SAFE_NO_PAD.decode(c.challenge.trim_end_matches('=')) else {
            return json_error(StatusCode::BAD_REQUEST, "the ceremony is malformed");
        };
        let req = pb::RecordWebauthnUseRequest {
            user: Some(caller.user_ref()),
            factor_id: factor.id.clone(),
            sign_count: result.counter(),
            request_id: rid.to_string(),
            challenge,
        };
        let recorded = ctl
            .call(Retry::Once, |mut cl| {
                let req = req.clone();
                async move { cl.record_webauthn_use(req).await }
            })
            .await;
        match recorded {
            Ok(r) if r.accepted => {}
            Ok(r) => {
                tracing::warn!(request_id = %rid, subject = %caller.session.sub, factor = %factor.id, refusal = %r.refusal, "WebAuthn assertion refused");
                self.record_event(caller, "mfa.webauthn", "refused", rid, host, &factor.id);
                return json_error(StatusCode::UNAUTHORIZED, &r.refusal);
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "WebAuthn use not recorded");
                return json_error(StatusCode::SERVICE_UNAVAILABLE, &call_failure(&e));
            }
        }
        let method = if platform {
            MfaMethod::Platform
        } else {
            MfaMethod::SecurityKey
        };
        let lifetime = Self::mfa_lifetime(policy, host, &c.rd);
        let Some(cookie) = issue_mfa(
            view,
            caller,
            method,
            &factor.id,
            result.user_verified(),
            lifetime,
            now,
        ) else {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this edge cannot issue assertions yet",
            );
        };
        tracing::info!(request_id = %rid, subject = %caller.session.sub, factor = %factor.id, "WebAuthn passed");
        self.record_event(caller, "mfa.webauthn", "ok", rid, host, &factor.id);
        let mut r = json_response(StatusCode::OK, json!({ "redirect": c.rd }));
        r.headers_mut().append(header::SET_COOKIE, cookie);
        r.headers_mut()
            .append(header::SET_COOKIE, cookie::clear(CEREMONY_COOKIE));
        r
    }

    /// Counts a failed answer to a ceremony; whether it was recorded (not when the user is
    /// locked out or the ceremony was used before).
    async fn count_failure(
        &self,
        ctl: &crate::controllers::ControllerClient,
        caller: &Caller,
        kind: pb::FactorKind,
        challenge: Vec<u8>,
        rid: &str,
    ) -> bool {
        let req = pb::RecordMfaFailureRequest {
            user: Some(caller.user_ref()),
            kind: kind as i32,
            request_id: rid.to_string(),
            challenge,
        };
        match ctl
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.record_mfa_failure(req).await }
            })
            .await
        {
            Ok(r) => r.recorded,
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "MFA failure not counted");
                false
            }
        }
    }

    fn webauthn_register_begin(
        &self,
        view: &View,
        policy: &CompiledPolicy,
        authority: &str,
        host: &str,
        caller: &Caller,
        body: &Value,
    ) -> Response<Body> {
        let now = now_secs();
        let kind = body["kind"].as_str().unwrap_or_default();
        if kind != "security_key" && kind != "platform" {
            return json_error(
                StatusCode::BAD_REQUEST,
                "kind must be security_key or platform",
            );
        }
        let factors = user_factors(view, caller);
        if !factors.is_empty() && !recently_verified(caller, now) {
            return json_error(
                StatusCode::FORBIDDEN,
                "adding a factor needs one of your existing factors passed within the last 10 minutes",
            );
        }
        // A security key or device authenticator is only added after one was passed, when
        // the user has one (a phished code must not buy a phishing-resistant factor).
        let holds_key = factors.iter().any(|f| f.kind != FactorKind::Totp);
        let passed_key = caller
            .identity
            .mfa
            .as_ref()
            .is_some_and(|m| m.method != MfaMethod::Totp);
        if holds_key && !passed_key {
            return json_error(
                StatusCode::FORBIDDEN,
                "adding a security key or device authenticator needs one of your security keys or device authenticators passed within the last 10 minutes",
            );
        }
        let Some(wa) = relying_party(policy, authority, host) else {
            return no_relying_party();
        };
        let exclude: Vec<Vec<u8>> = factors
            .iter()
            .filter(|f| f.kind != FactorKind::Totp)
            .filter_map(|f| {
                serde_json::from_str::<SecurityKey>(&f.credential_json)
                    .ok()
                    .map(|k| k.cred_id().clone())
            })
            .collect();
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let user_name = if caller.session.email.is_empty() {
            caller.session.sub.clone()
        } else {
            caller.session.email.clone()
        };
        let display = if caller.session.name.is_empty() {
            user_name.clone()
        } else {
            caller.session.name.clone()
        };
        let started = if kind == "platform" {
            wa.start_passkey_registration(user_handle(caller), &user_name, &display, exclude)
                .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        } else {
            wa.start_securitykey_registration(
                user_handle(caller),
                &user_name,
                &display,
                exclude,
                None,
                Some(AuthenticatorAttachment::CrossPlatform),
            )
            .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        };
        let (mut options, state) = match started {
            Ok((Ok(o), Ok(s))) => (o, s),
            _ => {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the ceremony could not start",
                );
            }
        };
        if kind == "security_key" {
            // webauthn-rs asks security keys for credProtect "userVerificationRequired" while
            // user verification itself is only "preferred"; Chromium refuses that combination
            // ("protection policy is inconsistent"). The extension is not enforced, so it is
            // left out; user verification is decided per application at authentication.
            if let Some(ext) = options["publicKey"]["extensions"].as_object_mut() {
                ext.remove("credentialProtectionPolicy");
                ext.remove("enforceCredentialProtectionPolicy");
            }
        }
        let ceremony = Ceremony {
            sid: caller.session.sid.clone(),
            purpose: "register".into(),
            kind: kind.into(),
            name: body["name"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            code: body["enrollment_code"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(128)
                .collect(),
            rd: String::new(),
            uv: kind == "platform",
            challenge: challenge_of(&options),
            state,
        };
        ceremony_response(view, &ceremony, options, now)
    }

    #[allow(clippy::too_many_arguments)]
    async fn webauthn_register_finish(
        &self,
        view: &View,
        policy: &CompiledPolicy,
        authority: &str,
        host: &str,
        caller: &Caller,
        body: &Value,
        sealed: Option<&str>,
        rid: &str,
    ) -> Response<Body> {
        let (c, wa) = match ceremony_and_rp(
            view,
            policy,
            authority,
            host,
            caller,
            sealed,
            "register",
            "this registration expired or belongs to another session; start again",
        ) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let Ok(reg) =
            serde_json::from_value::<RegisterPublicKeyCredential>(body["credential"].clone())
        else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "the authenticator's answer is malformed",
            );
        };
        // The browser says where the credential lives; a "platform" factor must be one.
        let attachment = body["attachment"].as_str().unwrap_or_default();
        if c.kind == "platform" && attachment == "cross-platform" {
            return json_error(
                StatusCode::BAD_REQUEST,
                "that was a roaming security key, not this device's authenticator; add it as a security key",
            );
        }
        if c.kind == "security_key" && attachment == "platform" {
            return json_error(
                StatusCode::BAD_REQUEST,
                "that was this device's built-in authenticator; add it as this device",
            );
        }
        let credential = if c.kind == "platform" {
            serde_json::from_value::<PasskeyRegistration>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_passkey_registration(&reg, &s)
                        .map_err(|e| e.to_string())
                })
                .map(|k| (k.cred_id().clone(), serde_json::to_string(&k)))
        } else {
            serde_json::from_value::<SecurityKeyRegistration>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_securitykey_registration(&reg, &s)
                        .map_err(|e| e.to_string())
                })
                .map(|k| (k.cred_id().clone(), serde_json::to_string(&k)))
        };
        let (cred_id, json) = match credential {
            Ok((id, Ok(json))) => (id, json),
            Ok(_) => {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the credential could not be stored",
                );
            }
            Err(e) => {
                tracing::info!(request_id = %rid, subject = %caller.session.sub, error = %e, "WebAuthn registration refused");
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "the authenticator's registration was not accepted",
                );
            }
        };
        let Some(ctl) = &self.controllers else {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the controllers are unreachable",
            );
        };
        let kind = if c.kind == "platform" {
            pb::FactorKind::Platform
        } else {
            pb::FactorKind::SecurityKey
        };
        let req = pb::RegisterWebauthnRequest {
            user: Some(caller.user_ref()),
            kind: kind as i32,
            name: c.name.clone(),
            credential: Some(pb::WebauthnCredential {
                credential_id: cred_id,
                credential_json: json,
                sign_count: 0,
                user_verified: c.uv,
                aaguid: String::new(),
            }),
            enrollment_code: c.code.clone(),
        };
        match ctl
            .call(Retry::Once, |mut cl| {
                let req = req.clone();
                async move { cl.register_webauthn(req).await }
            })
            .await
        {
            Ok(r) => {
                let factor = r.factor.unwrap_or_default();
                self.wait_applied(r.write.map(|w| w.revision).unwrap_or(0))
                    .await;
                tracing::info!(request_id = %rid, subject = %caller.session.sub, factor = %factor.id, kind = ?kind, "WebAuthn factor added");
                self.record_event(caller, "factor.add", "ok", rid, host, &factor.id);
                let mut r = json_response(
                    StatusCode::OK,
                    json!({ "redirect": format!("{PORTAL}?done=added"), "factor_id": factor.id }),
                );
                r.headers_mut()
                    .append(header::SET_COOKIE, cookie::clear(CEREMONY_COOKIE));
                r
            }
            Err(e) => {
                tracing::info!(request_id = %rid, error = %e, "WebAuthn factor not added");
                json_error(StatusCode::BAD_REQUEST, &call_failure(&e))
            }
        }
    }

    /// Waits (briefly) until this edge's replica has applied `revision`, so the page the user
    /// sees next shows the change.
    pub(crate) async fn wait_applied(&self, revision: u64) {
        let mut w = self.replica.watch();
        let _ = tokio::time::timeout(Duration::from_secs(2), w.wait_for(|r| *r >= revision)).await;
    }

    /// The portal page.
    async fn portal(
        &self,
        view: &View,
        caller: &Caller,
        done: Option<&str>,
        error: Option<&str>,
        rid: &str,
    ) -> Response<Body> {
        let now = now_secs();
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
                     <form method=post action=\"/.palisade/portal/factor/rename\" class=inline><input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=factor_id value=\"{id}\"><input name=name aria-label=\"New name\" placeholder=\"New name\" maxlength=64 required><button type=submit class=small>Rename</button></form> \
                     <form method=post action=\"/.palisade/portal/factor/remove\" class=inline><input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=factor_id value=\"{id}\"><button type=submit class=\"small danger\">Remove</button></form></td></tr>",
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
                "<p>To add or remove factors, first <a class=button href=\"/.palisade/mfa?rd={}\">verify with an existing factor</a> (valid for 10 minutes).</p>",
                enc(PORTAL)
            ));
        } else {
            let code_field = if factors.is_empty() && self.enrollment_needs_code(view) {
                "<label>Enrollment code from your administrator<br><input name=enrollment_code id=enrollment_code required></label>"
            } else {
                ""
            };
            body.push_str(&format!(
                "<form method=post action=\"/.palisade/portal/totp/begin\"><input type=hidden name=csrf value=\"{csrf}\">{code_field}\
                 <label>Name<br><input name=name value=\"Authenticator app\" maxlength=64></label> <button type=submit id=add-totp>Add an authenticator app</button></form>\
                 <div class=webauthn-add>{code_js}<label>Name<br><input id=webauthn-name value=\"Security key\" maxlength=64></label><br>\
                 <button type=button id=add-security-key>Add a security key</button> <button type=button id=add-platform>Add this device (Touch ID, Windows Hello)</button></div><p id=status role=status></p>",
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
                escape(&fmt_time(e.time.map(|t| t.seconds).unwrap_or(0))),
                escape(e.details.get("host").map(String::as_str).unwrap_or("")),
                escape(&e.edge_id),
                if this {
                    "this session".to_string()
                } else {
                    format!(
                        "<form method=post action=\"/.palisade/portal/revoke\" class=inline><input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=session_id value=\"{}\"><button type=submit class=\"small danger\">Sign out</button></form>",
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
                            "<form method=post action=\"/.palisade/portal/revoke\" class=inline><input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=device_id value=\"{}\"><button type=submit class=\"small danger\">Revoke</button></form>",
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
                escape(&fmt_time(e.time.map(|t| t.seconds).unwrap_or(0))),
                escape(&e.action),
                escape(&e.result),
                escape(&e.edge_id),
            ));
        }
        body.push_str("</table><p><a href=\"/.palisade/logout\">Sign out</a></p>");
        pages::interactive(StatusCode::OK, "Your account", &body, &csrf, rid)
    }

    fn enrollment_needs_code(&self, view: &View) -> bool {
        view.policy
            .as_ref()
            .is_some_and(|(_, p)| p.mfa_policy().enrollment_requires_code)
    }

    async fn auth_events(&self, caller: &Caller) -> Vec<pb::AuditEvent> {
        let Some(ctl) = &self.controllers else {
            return Vec::new();
        };
        let req = pb::ListAuthEventsRequest {
            user: Some(caller.user_ref()),
            limit: 50,
        };
        ctl.call(Retry::Safe, |mut c| {
            let req = req.clone();
            async move { c.list_auth_events(req).await }
        })
        .await
        .map(|r| r.events)
        .unwrap_or_default()
    }

    /// Form posts from the portal.
    async fn portal_action(
        &self,
        view: &View,
        caller: &Caller,
        action: PortalAction,
        f: &BTreeMap<String, String>,
        enroll: Option<&str>,
        rid: &str,
    ) -> Response<Body> {
        let Some(ctl) = &self.controllers else {
            return unreachable_page(rid);
        };
        let user = caller.user_ref();
        let field = |k: &str| f.get(k).cloned().unwrap_or_default();
        let outcome: Result<(u64, &str), String> = match action {
            PortalAction::TotpBegin => {
                // The browser keeps a secret whose hash the controllers keep with the pending
                // factor: only this browser can confirm it.
                let Ok(secret) = crate::oidc::random_token() else {
                    return unreachable_page(rid);
                };
                let req = pb::BeginTotpEnrollmentRequest {
                    user: Some(user),
                    name: field("name"),
                    account_label: if caller.session.email.is_empty() {
                        caller.session.sub.clone()
                    } else {
                        caller.session.email.clone()
                    },
                    enrollment_code: field("enrollment_code"),
                    binding_sha256: Sha256::digest(secret.as_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                };
                return match ctl
                    .call(Retry::Once, |mut c| {
                        let req = req.clone();
                        async move { c.begin_totp_enrollment(req).await }
                    })
                    .await
                {
                    Ok(r) => {
                        let now = now_secs();
                        let pending = Enrollment {
                            sid: caller.session.sid.clone(),
                            factor_id: r.factor_id.clone(),
                            binding: secret,
                        };
                        let ttl = palisade_policy::catalog::PENDING_TOTP_MS / 1000;
                        let mut page =
                            totp_enrollment_page(&r, &csrf_token(&caller.session.sid), None, rid);
                        match cookie::seal(&view.keyring, "enroll", &pending, now + ttl) {
                            Ok(sealed) => page.headers_mut().append(
                                header::SET_COOKIE,
                                cookie::set(ENROLL_COOKIE, &sealed, ttl),
                            ),
                            Err(_) => return unreachable_page(rid),
                        };
                        page
                    }
                    Err(e) => {
                        self.portal(view, caller, None, Some(&call_failure(&e)), rid)
                            .await
                    }
                };
            }
            PortalAction::TotpConfirm => {
                let factor_id = field("factor_id");
                let again = |msg: &str| {
                    // Show the same QR again with the error; the pending factor stays.
                    let again = pb::BeginTotpEnrollmentResponse {
                        factor_id: factor_id.clone(),
                        provisioning_uri: field("uri"),
                    };
                    totp_enrollment_page(&again, &csrf_token(&caller.session.sid), Some(msg), rid)
                };
                let pending: Option<Enrollment> = enroll
                    .and_then(|e| cookie::open(&view.keyring, "enroll", e, now_secs()).ok())
                    .filter(|p: &Enrollment| {
                        use subtle::ConstantTimeEq;
                        bool::from(p.sid.as_bytes().ct_eq(caller.session.sid.as_bytes()))
                            && p.factor_id == factor_id
                    });
                // Without the binding, the controllers are not asked: the answer is the same.
                let Some(pending) = pending else {
                    return again(CONFIRM_REFUSED);
                };
                let req = pb::ConfirmTotpEnrollmentRequest {
                    user: Some(user),
                    factor_id: factor_id.clone(),
                    code: field("code"),
                    binding: pending.binding.into_bytes(),
                };
                match ctl
                    .call(Retry::Once, |mut c| {
                        let req = req.clone();
                        async move { c.confirm_totp_enrollment(req).await }
                    })
                    .await
                {
                    Ok(r) => {
                        self.wait_applied(r.write.map(|w| w.revision).unwrap_or(0))
                            .await;
                        self.record_event(caller, "factor.add", "ok", rid, "", &factor_id);
                        // Confirming the new factor is not passing it: no MFA assertion here.
                        let mut resp =
                            redirect(StatusCode::SEE_OTHER, &format!("{PORTAL}?done=added"));
                        resp.headers_mut()
                            .append(header::SET_COOKIE, cookie::clear(ENROLL_COOKIE));
                        return resp;
                    }
                    Err(crate::controllers::CallError::Refused(_)) => {
                        return again(CONFIRM_REFUSED);
                    }
                    Err(e) => return again(&call_failure(&e)),
                }
            }
            PortalAction::Rename => {
                let req = pb::RenameFactorRequest {
                    user: Some(user),
                    factor_id: field("factor_id"),
                    name: field("name"),
                };
                ctl.call(Retry::Safe, |mut c| {
                    let req = req.clone();
                    async move { c.rename_factor(req).await }
                })
                .await
                .map(|r| (r.write.map(|w| w.revision).unwrap_or(0), "renamed"))
                .map_err(|e| call_failure(&e))
            }
            PortalAction::Remove => {
                let req = pb::RemoveOwnFactorRequest {
                    user: Some(user),
                    factor_id: field("factor_id"),
                };
                let r = ctl
                    .call(Retry::Once, |mut c| {
                        let req = req.clone();
                        async move { c.remove_own_factor(req).await }
                    })
                    .await
                    .map(|r| (r.write.map(|w| w.revision).unwrap_or(0), "removed"))
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
                ctl.revoke_own(user, target, "revoked by its user in the portal")
                    .await
                    .map(|rev| (rev, "revoked"))
                    .map_err(|e| call_failure(&e))
            }
        };
        match outcome {
            Ok((revision, done)) => {
                self.wait_applied(revision).await;
                redirect(StatusCode::SEE_OTHER, &format!("{PORTAL}?done={done}"))
            }
            Err(msg) => {
                let mut r = self.portal(view, caller, None, Some(&msg), rid).await;
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        }
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
        FactorKind::Platform => "device authenticator",
    }
}

fn totp_result_name(r: pb::TotpResult) -> &'static str {
    match r {
        pb::TotpResult::Ok => "ok",
        pb::TotpResult::Invalid => "failed",
        pb::TotpResult::Replayed => "replayed",
        pb::TotpResult::LockedOut => "locked_out",
        pb::TotpResult::NoFactor => "no_factor",
        pb::TotpResult::Unspecified => "error",
    }
}

pub(crate) fn csrf_ok(given: Option<&String>, caller: &Caller) -> bool {
    use subtle::ConstantTimeEq;
    let want = csrf_token(&caller.session.sid);
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(want.as_bytes())))
}

pub(crate) fn cross_site_refused(rid: &str) -> Response<Body> {
    pages::message(
        StatusCode::FORBIDDEN,
        "Refused",
        "this request came from another site",
        rid,
    )
}

pub(crate) fn csrf_refused(rid: &str) -> Response<Body> {
    pages::message(
        StatusCode::FORBIDDEN,
        "Refused",
        "this form expired or did not come from this page; go back, reload and try again",
        rid,
    )
}

fn too_large(rid: &str) -> Response<Body> {
    pages::message(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Too large",
        "the form is too large",
        rid,
    )
}

fn unreachable_page(rid: &str) -> Response<Body> {
    pages::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "your second factor cannot be checked right now; try again in a moment",
        rid,
    )
}

use palisade_edge_core::mfa::recently_verified;

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

fn ceremony_response(view: &View, c: &Ceremony, options: Value, now: i64) -> Response<Body> {
    match cookie::seal(&view.keyring, "webauthn", c, now + CEREMONY_SECS) {
        Ok(sealed) => {
            let mut r = json_response(StatusCode::OK, options);
            r.headers_mut().append(
                header::SET_COOKIE,
                cookie::set(CEREMONY_COOKIE, &sealed, CEREMONY_SECS),
            );
            r
        }
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this edge cannot start a ceremony yet",
        ),
    }
}

fn open_ceremony(
    view: &View,
    sealed: Option<&str>,
    caller: &Caller,
    purpose: &str,
    now: i64,
) -> Option<Ceremony> {
    let c: Ceremony = cookie::open(&view.keyring, "webauthn", sealed?, now).ok()?;
    use subtle::ConstantTimeEq;
    (bool::from(c.sid.as_bytes().ct_eq(caller.session.sid.as_bytes())) && c.purpose == purpose)
        .then_some(c)
}

/// The page that shows a new TOTP seed (QR code and text) and asks for a first code.
fn totp_enrollment_page(
    r: &pb::BeginTotpEnrollmentResponse,
    csrf: &str,
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
         <input type=hidden name=factor_id value=\"{}\"><input type=hidden name=uri value=\"{}\">\
         <label>Code<br><input name=code id=code inputmode=numeric autocomplete=one-time-code maxlength=8 required autofocus></label> <button type=submit>Confirm</button></form>\
         <p class=muted>Never share this page: the key is your second factor.</p>",
        escape(&secret),
        escape(csrf),
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
    use proptest::prelude::*;

    #[test]
    fn qr_codes_render() {
        let svg = qr_svg("otpauth://totp/Palisade:alice?secret=JBSWY3DPEHPK3PXP&issuer=Palisade")
            .expect("qr");
        assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"));
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a"), csrf_token("a"));
    }

    proptest! {
        // WebAuthn inputs from the browser: whatever arrives, parsing never panics.
        #[test]
        fn webauthn_inputs_never_panic(s in ".{0,600}", raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = serde_json::from_str::<PublicKeyCredential>(&s);
            let _ = serde_json::from_str::<RegisterPublicKeyCredential>(&s);
            let _ = serde_json::from_slice::<PublicKeyCredential>(&raw);
            let v = json!({"id": s, "rawId": s, "type": "public-key", "response": {"authenticatorData": s, "clientDataJSON": s, "signature": s}});
            let _ = serde_json::from_value::<PublicKeyCredential>(v);
            let _ = form(&raw);
            let _ = challenge_of(&json!({"publicKey": {"challenge": s}}));
        }
    }
}
