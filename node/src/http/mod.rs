//! The HTTP adapter (HTTP/1.1 and HTTP/2): framing checks → host and normalised path →
//! Palisade's reserved paths (parsed once into `ReservedPath`) or the enforcement core
//! (`palisade_edge_core::enforce`) → render its verdict: proxy with the identity assertion,
//! send to sign-in or the MFA prompt, or a page that says why not.
//!
//! Nothing here keeps per-user state. A session is a token signed with the catalog's keys that
//! every edge verifies alone; every request is decided against the replica's current view, so
//! a revocation applies to the next request, also on a keep-alive connection already open. What
//! stays open after the request (a WebSocket, a streaming response) is re-decided by
//! `enforce::Watch` and cut when access ends.
//!
//! Handlers take one `RequestCtx` and return `Result<Response, EdgeError>`; `EdgeError` is the
//! only place a refusal becomes a page or a JSON error. Every state-changing reserved path
//! passes `csrf::guard` (same origin, anti-CSRF token, bounded body) before its handler runs.
//! Sign-in, MFA and portal requests are rate-limited per client address and per user
//! (`limits`), and the store of used sign-in states is bounded.

pub(crate) mod context;
pub(crate) mod csrf;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod framing;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use palisade_edge_core::enforce::{Enforced, Transport, Unavailable, Verdict, enforce};
use palisade_edge_core::reserved::{MFA_PROMPT, Step};
use palisade_edge_core::{Caller, ReservedPath, View};
use palisade_policy::decide::DenyReason;

use crate::assertion::AssertionSigner;
use crate::controllers::ControllerClient;
use crate::cookie;
use crate::enforce::{Head, Watch};
use crate::limits::{Limiters, RateLimiter, UsedStates};
use crate::oidc::{RelyingParty, random_token};
use crate::pages;
use crate::proxy::{Body, Upstreams, full};
use crate::sync::Replica;

pub use framing::{authority, framing_problem};

use context::RequestCtx;
use error::{EdgeError, Format};
use framing::{redirect, wants_html};

/// Most sign-in states remembered as used, per generation (each generation lasts
/// `LOGIN_TTL_SECS`): a bound on memory whatever the rate of callbacks.
const MAX_USED_STATES: usize = 200_000;

/// One edge's request handling.
pub struct Gateway {
    pub(crate) edge_id: String,
    pub(crate) replica: Arc<Replica>,
    pub(crate) rp: RelyingParty,
    pub(crate) signer: AssertionSigner,
    pub(crate) upstreams: Upstreams,
    pub(crate) controllers: Option<Arc<ControllerClient>>,
    pub(crate) used_states: UsedStates,
    pub(crate) limits: Limiters,
    hsts: Option<HeaderValue>,
    alt_svc: Option<(HeaderValue, crate::h3::H3Health)>,
}

/// Request-path settings of an edge that are not policy.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Rate limits.
    pub rates: crate::limits::Rates,
    /// `Strict-Transport-Security` max-age in seconds; 0 sends none.
    pub hsts_max_age_secs: u64,
    /// `Alt-Svc` advertising HTTP/3 on answers over TCP, while the UDP listener serves.
    pub alt_svc: Option<(HeaderValue, crate::h3::H3Health)>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            rates: crate::limits::Rates::default(),
            hsts_max_age_secs: 365 * 86_400,
            alt_svc: None,
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("edge_id", &self.edge_id)
            .finish_non_exhaustive()
    }
}

/// What a connection knows about its client, bound once when it opens: its address and the
/// device certificate it presented (verified by TLS against the device CA), if any.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// The device certificate presented.
    pub device: Option<Arc<palisade_link::device::PresentedDevice>>,
}

/// The edge's clock, read once per request and passed on.
pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Takes a token from `limiter` for `key`, or the refusal.
pub(crate) fn limited<K: std::hash::Hash + ?Sized>(
    limiter: &RateLimiter,
    key: &K,
    rid: &str,
) -> Result<(), EdgeError> {
    limiter.check(key, Instant::now()).map_err(|wait| {
        tracing::info!(request_id = %rid, limit = limiter.name, retry_after_ms = wait.as_millis() as u64, "rate limited");
        metrics::counter!("palisade_edge_rate_limited_total", "limit" => limiter.name).increment(1);
        EdgeError::RateLimited(wait)
    })
}

/// How a reserved path renders refusals: JSON for the WebAuthn script's calls.
fn format_of(reserved: ReservedPath) -> Format {
    match reserved {
        ReservedPath::MfaWebauthn(_) | ReservedPath::PortalWebauthn(_) => Format::Json,
        _ => Format::Html,
    }
}

/// The transport a request arrived on, from its HTTP version.
fn transport_of<B>(req: &Request<B>) -> Transport {
    match req.version() {
        http::Version::HTTP_2 => Transport::H2,
        http::Version::HTTP_3 => Transport::H3,
        _ => Transport::H1,
    }
}

/// The path and query the user was going to, for a return after sign-in or MFA.
fn return_to<B>(req: &Request<B>, path: &str) -> String {
    match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// A request to an application as it arrived, for rendering its verdict.
#[derive(Debug, Clone, Copy)]
struct Arrival<'a> {
    head: &'a Head,
    authority: &'a str,
    peer: SocketAddr,
    rid: &'a str,
    now: i64,
    view: Option<&'a Arc<View>>,
}

impl Gateway {
    /// The request handling of one edge. Without `controllers`, sign-out cannot be recorded and
    /// answers 503.
    pub fn new(
        edge_id: String,
        replica: Arc<Replica>,
        rp: RelyingParty,
        signer: AssertionSigner,
        upstreams: Upstreams,
        controllers: Option<ControllerClient>,
        options: GatewayOptions,
    ) -> Self {
        let hsts = (options.hsts_max_age_secs > 0)
            .then(|| HeaderValue::from_str(&format!("max-age={}", options.hsts_max_age_secs)).ok())
            .flatten();
        Self {
            edge_id,
            replica,
            rp,
            signer,
            upstreams,
            controllers: controllers.map(Arc::new),
            used_states: UsedStates::new(
                Duration::from_secs(crate::auth::login::LOGIN_TTL_SECS as u64),
                MAX_USED_STATES,
            ),
            limits: Limiters::new(options.rates),
            hsts,
            alt_svc: options.alt_svc,
        }
    }

    /// Handles one request that arrived over `transport` on `conn`: the one request path,
    /// which every protocol adapter reaches through `service::EdgeService`.
    pub async fn serve(
        &self,
        req: Request<Body>,
        conn: &Connection,
        transport: Transport,
    ) -> Response<Body> {
        let peer = conn.peer;
        let rid = random_token()
            .map(|t| t[..16].to_string())
            .unwrap_or_else(|_| "-".into());
        let method = req.method().clone();
        let path_for_log = req.uri().path().to_string();
        // The host is read again here only where HTTP/3 could be advertised (not per request
        // otherwise: route() reads it for itself).
        let host = (transport != Transport::H3 && self.alt_svc.is_some())
            .then(|| authority(&req).map(|(_, host)| host))
            .flatten();
        let started = std::time::Instant::now();
        let mut resp = self.route(req, conn, transport, &rid).await;
        if let Ok(v) = HeaderValue::from_str(&rid) {
            resp.headers_mut().insert("x-request-id", v);
        }
        if let Some(h) = &self.hsts {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, h.clone());
        }
        // RFC 7838: advertise HTTP/3 only while it answers, and only for an origin whose
        // every application accepts it (a browser uses it for every path of the host)
        if let Some((v, health)) = &self.alt_svc
            && health.serving()
            && let Some(host) = &host
            && self
                .replica
                .view()
                .as_deref()
                .and_then(View::compiled_policy)
                .is_some_and(|p| p.origin_accepts_h3(host))
        {
            resp.headers_mut().insert(header::ALT_SVC, v.clone());
        }
        metrics::histogram!("palisade_edge_request_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("palisade_edge_requests_total", "status" => resp.status().as_u16().to_string())
            .increment(1);
        tracing::debug!(request_id = %rid, %method, path = %path_for_log, status = resp.status().as_u16(), client = %peer.ip(), ?transport, "request");
        resp
    }

    async fn route(
        &self,
        req: Request<Body>,
        conn: &Connection,
        transport: Transport,
        rid: &str,
    ) -> Response<Body> {
        let peer = conn.peer;
        if let Some(problem) = framing_problem(&req) {
            tracing::info!(request_id = %rid, client = %peer.ip(), problem, "refused an ambiguous request");
            let mut r = EdgeError::BadRequest(problem.into()).into_response(Format::Html, rid);
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        let Some((authority, host)) = authority(&req) else {
            return EdgeError::BadRequest("the request names no valid host".into())
                .into_response(Format::Html, rid);
        };
        let view = self.replica.view();
        let semicolons = view
            .as_deref()
            .and_then(View::compiled_policy)
            .map(|p| p.request_paths().semicolon_parameters)
            .unwrap_or_default();
        let path = match palisade_policy::path::normalize_with(req.uri().path(), semicolons) {
            Ok(p) => p,
            Err(e) => {
                return EdgeError::BadRequest(format!("the request path is refused: {e}").into())
                    .into_response(Format::Html, rid);
            }
        };
        let reserved = ReservedPath::parse(&path);
        if reserved == Some(ReservedPath::Jwks) {
            let mut r = Response::new(full(self.signer.jwks().to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            );
            return r;
        }
        let now = now_secs();
        if let (Some(view), Some(reserved)) = (&view, reserved)
            && let Some(policy) = view.compiled_policy()
        {
            let ctx = RequestCtx {
                rid: rid.to_string(),
                peer,
                device: conn.device.clone(),
                transport,
                authority,
                host,
                view: view.clone(),
                policy: policy.clone(),
                now,
                format: format_of(reserved),
            };
            return match self.reserved(&ctx, reserved, req).await {
                Ok(r) => r,
                Err(e) => e.into_response(ctx.format, rid),
            };
        }
        let head = Head {
            host,
            path,
            method: req.method().clone(),
            peer: peer.ip(),
            transport,
            session: cookie::get(req.headers(), cookie::SESSION).map(str::to_string),
            mfa: cookie::get(req.headers(), cookie::MFA).map(str::to_string),
            device: conn.device.clone(),
        };
        let Enforced {
            verdict,
            session_refused,
            device_refused,
        } = enforce(
            view.as_deref(),
            &head.request(0),
            self.replica.staleness(),
            now,
        );
        if let Some(why) = session_refused {
            tracing::debug!(request_id = %rid, reason = %why, "session cookie refused");
        }
        if let Some(why) = device_refused {
            tracing::info!(request_id = %rid, device = %conn.device.as_deref().map(|d| d.id.as_str()).unwrap_or(""), reason = %why, "device certificate does not count");
        }
        if let Some(app) = verdict.app() {
            tracing::debug!(request_id = %rid, app = %app.id, verdict = verdict.kind(), "decided");
        }
        let mut resp = match self
            .application(
                req,
                verdict,
                &Arrival {
                    head: &head,
                    authority: &authority,
                    peer,
                    rid,
                    now,
                    view: view.as_ref(),
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(Format::Html, rid),
        };
        if session_refused.is_some() {
            resp.headers_mut()
                .append(header::SET_COOKIE, cookie::clear(cookie::SESSION));
        }
        resp
    }

    /// Renders the core's verdict for a request to an application.
    async fn application(
        &self,
        req: Request<Body>,
        verdict: Verdict<'_>,
        at: &Arrival<'_>,
    ) -> Result<Response<Body>, EdgeError> {
        let Arrival {
            head,
            authority,
            peer,
            rid,
            now,
            view,
        } = *at;
        match verdict {
            Verdict::Unavailable(Unavailable::NotReady) => Err(EdgeError::Starting),
            Verdict::NotFound => Err(EdgeError::NoApplication),
            Verdict::BadPath(e) => {
                tracing::info!(request_id = %rid, client = %peer.ip(), error = %e, "refused an ambiguous path");
                Err(EdgeError::BadRequest(
                    format!("the request path is refused: {e}").into(),
                ))
            }
            Verdict::Forward {
                app, caller, rule, ..
            } => {
                let watch = Watch::new(
                    self.replica.clone(),
                    head.clone(),
                    caller.as_ref().map(|c| c.session.sid.clone()),
                    now,
                );
                let at = forward::Head {
                    authority,
                    path: &head.path,
                    peer,
                    rid,
                    now,
                };
                Ok(self
                    .forward(&at, req, app, caller.as_ref(), &rule.name, watch)
                    .await)
            }
            ref stale @ Verdict::Unavailable(Unavailable::Stale { .. }) => {
                tracing::info!(request_id = %rid, explanation = %stale.explain(), "denied");
                Err(EdgeError::refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Temporarily unavailable",
                    stale.explain(),
                ))
            }
            ref denied @ Verdict::Deny {
                app,
                ref rule,
                ref reason,
            } => {
                // The page names the rule, the request id and what the caller's own device
                // lacks (they can fix that); what the rule would have needed otherwise (who
                // else is allowed) stays in the log and in `palisadectl simulate`.
                tracing::info!(request_id = %rid, app = %app.id, explanation = %denied.explain(), "denied");
                let (why, device) = match reason {
                    DenyReason::NoRuleMatched { device, .. } => {
                        ("no rule allows this request".to_string(), device.as_slice())
                    }
                    other => (other.to_string(), &[][..]),
                };
                Ok(pages::denied(
                    &app.name,
                    rule.as_ref().map(|r| &*r.name),
                    &why,
                    device,
                    rid,
                ))
            }
            Verdict::SignIn { app, providers } => {
                let view = view.ok_or(EdgeError::Starting)?;
                let policy = view.compiled_policy().ok_or(EdgeError::Starting)?;
                let ctx = RequestCtx {
                    rid: rid.to_string(),
                    peer,
                    device: head.device.clone(),
                    transport: head.transport,
                    authority: authority.to_string(),
                    host: head.host.clone(),
                    view: view.clone(),
                    policy: policy.clone(),
                    now,
                    format: Format::Html,
                };
                let back = return_to(&req, &head.path);
                let (parts, _) = req.into_parts();
                self.challenge_login(&ctx, &parts, app, &providers, &back)
                    .await
            }
            Verdict::Mfa { rule, methods, .. } => {
                let back = return_to(&req, &head.path);
                if wants_html(&req.into_parts().0) {
                    return Ok(redirect(
                        StatusCode::SEE_OTHER,
                        &format!("{MFA_PROMPT}?rd={}", framing::enc(&back)),
                    ));
                }
                let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                let mut r = EdgeError::refused(
                    StatusCode::UNAUTHORIZED,
                    "Second factor required",
                    format!(
                        "rule {} needs a second factor (one of {}): open {} in a browser",
                        rule.as_ref().map(|r| &*r.name).unwrap_or("-"),
                        names.join(", "),
                        MFA_PROMPT
                    ),
                )
                .into_response(Format::Html, rid);
                if let Ok(v) =
                    HeaderValue::from_str(&format!("Palisade-MFA methods=\"{}\"", names.join(" ")))
                {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                Ok(r)
            }
        }
    }

    /// Palisade's own pages: rate-limited per client address, then dispatched by variant.
    async fn reserved(
        &self,
        ctx: &RequestCtx,
        reserved: ReservedPath,
        req: Request<Body>,
    ) -> Result<Response<Body>, EdgeError> {
        let client = ctx.peer.ip();
        limited(&self.limits.reserved, &client, &ctx.rid)?;
        match reserved {
            ReservedPath::Callback => {
                limited(&self.limits.sign_in, &client, &ctx.rid)?;
                self.callback(ctx, &req.into_parts().0).await
            }
            ReservedPath::Login => {
                limited(&self.limits.sign_in, &client, &ctx.rid)?;
                self.login_choice(ctx, &req.into_parts().0).await
            }
            ReservedPath::Logout => self.logout(ctx, req).await,
            ReservedPath::Jwks | ReservedPath::Unknown => Err(EdgeError::NotFound),
            ReservedPath::WebauthnJs => Ok(crate::mfa::webauthn::script()),
            ReservedPath::MfaPrompt
            | ReservedPath::MfaTotp
            | ReservedPath::MfaWebauthn(Step::Begin | Step::Finish)
            | ReservedPath::Portal
            | ReservedPath::PortalWebauthn(_)
            | ReservedPath::PortalAction(_) => self.mfa_routes(ctx, reserved, req).await,
        }
    }

    /// The caller of a request to one of the edge's own pages, from its cookies.
    pub(crate) fn caller(&self, ctx: &RequestCtx, headers: &http::HeaderMap) -> Option<Caller> {
        palisade_edge_core::session::verify(
            &ctx.view,
            cookie::get(headers, cookie::SESSION),
            cookie::get(headers, cookie::MFA),
            palisade_edge_core::session::Presented {
                host: &ctx.host,
                device: ctx.device_record().map(|d| d.id.as_str()),
            },
            ctx.now,
            0,
        )
        .unwrap_or_else(|why| {
            tracing::debug!(request_id = %ctx.rid, reason = %why, "session cookie refused");
            None
        })
    }

    /// Waits (briefly) until this edge's replica has applied `revision`, so the page the user
    /// sees next shows the change.
    pub(crate) async fn wait_applied(&self, revision: u64) {
        let mut w = self.replica.watch();
        let _ = tokio::time::timeout(Duration::from_secs(2), w.wait_for(|r| *r >= revision)).await;
    }
}
