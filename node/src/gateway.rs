//! The request path: framing checks → host and normalised path → Palisade's reserved paths →
//! route to an application → read the session (and the MFA assertion) → revocations →
//! `decide()` → proxy with the identity assertion, or send to sign-in, or deny with a page that
//! says why.
//!
//! Nothing here keeps per-user state. A session is a token signed with the catalog's keys that
//! every edge verifies alone; every request is checked against the revocations in the replica, so
//! a revocation applies to the next request, also on a keep-alive connection already open. What
//! stays open after the request (a WebSocket, a streaming response) is re-decided by
//! `enforce::Watch` and cut when access ends.
//!
//! Sign-in, MFA and portal requests are rate-limited per client address and per user
//! (`limits`), and the store of used sign-in states is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use palisade_edge_core::ReservedPath;
use palisade_edge_core::enforce::{Enforced, Transport, Unavailable, Verdict, enforce};
use palisade_edge_core::reserved::MFA_PROMPT;
use palisade_policy::decide::DenyReason;
use palisade_policy::document::IdentityProvider;
use palisade_policy::token::{SessionClaims, TokenKind};
use palisade_policy::{CompiledApp, CompiledPolicy};
use palisade_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::assertion::{AssertionClaims, AssertionSigner};
use crate::controllers::ControllerClient;
use crate::cookie;
pub(crate) use crate::enforce::Caller;
use crate::enforce::{Head, Watch};
use crate::limits::{Limiters, RateLimiter, Use, UsedStates};
use crate::oidc::{Attempt, RelyingParty, random_token};
use crate::pages;
use crate::proxy::{Body, Forwarding, Upstreams, full};
use crate::replica::View;
use crate::sync::Replica;

pub use palisade_edge_core::reserved::{JWKS_PATH, PREFIX as RESERVED};
/// How long a sign-in attempt may take.
const LOGIN_TTL_SECS: i64 = 600;
/// Most claims (in bytes of JSON) carried in a session beyond the standard ones.
const MAX_EXTRA_CLAIMS: usize = 1024;
/// Most sign-in states remembered as used, per generation (each generation lasts
/// `LOGIN_TTL_SECS`): a bound on memory whatever the rate of callbacks.
const MAX_USED_STATES: usize = 200_000;

/// One edge's request handling.
pub struct Gateway {
    pub(crate) edge_id: String,
    pub(crate) replica: Arc<Replica>,
    rp: RelyingParty,
    signer: AssertionSigner,
    upstreams: Upstreams,
    pub(crate) controllers: Option<Arc<ControllerClient>>,
    used_states: UsedStates,
    pub(crate) limits: Limiters,
    hsts: Option<HeaderValue>,
}

/// Request-path settings of an edge that are not policy.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Rate limits.
    pub rates: crate::limits::Rates,
    /// `Strict-Transport-Security` max-age in seconds; 0 sends none.
    pub hsts_max_age_secs: u64,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            rates: crate::limits::Rates::default(),
            hsts_max_age_secs: 365 * 86_400,
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

/// The login attempt sealed in a cookie between the redirect to the provider and the callback.
#[derive(Debug, Serialize, Deserialize)]
struct LoginState {
    state: String,
    nonce: String,
    verifier: String,
    idp: String,
    return_to: String,
    redirect_uri: String,
}

/// Who the edge acts for in calls to the controllers.
pub(crate) trait UserRefOf {
    /// The caller as the controllers' `EdgeAuth` names a user.
    fn user_ref(&self) -> pb::UserRef;
}

impl UserRefOf for Caller {
    fn user_ref(&self) -> pb::UserRef {
        pb::UserRef {
            identity_provider: self.session.idp.clone(),
            subject: self.session.sub.clone(),
            session_id: self.session.sid.clone(),
            mfa_assertion: self.mfa_token.clone().unwrap_or_default(),
            email: self.session.email.clone(),
        }
    }
}

pub(crate) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Reasons a request is refused before any application is involved.
pub fn framing_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let h = req.headers();
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    if cl > 1
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(','))
    {
        return Some("the request carries more than one Content-Length");
    }
    if h.contains_key(header::TRANSFER_ENCODING) && cl > 0 {
        return Some("the request carries both Transfer-Encoding and Content-Length");
    }
    if h.get_all(header::HOST).iter().count() > 1 {
        return Some("the request carries more than one Host");
    }
    None
}

/// The authority the client addressed (`host[:port]`) and the lowercase host without port.
pub fn authority<B>(req: &Request<B>) -> Option<(String, String)> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req.headers().get(header::HOST)?.to_str().ok()?.to_string(),
    };
    let a: http::uri::Authority = raw.parse().ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    let host = a.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((a.as_str().to_ascii_lowercase(), host))
}

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A return path is only ever a local absolute path: never `//evil`, `/\evil` or a URL.
pub(crate) fn safe_return_to(rd: &str) -> String {
    let ok = rd.starts_with('/')
        && !rd.starts_with("//")
        && !rd.starts_with("/\\")
        && !rd.chars().any(|c| c.is_control())
        && rd.len() <= 2048;
    if ok { rd.to_string() } else { "/".into() }
}

pub(crate) fn redirect(status: StatusCode, to: &str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn wants_html(req: &Request<Incoming>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
}

/// `429 Too Many Requests` with `Retry-After`.
pub(crate) fn too_many(wait: Duration, rid: &str) -> Response<Body> {
    let mut r = pages::message(
        StatusCode::TOO_MANY_REQUESTS,
        "Slow down",
        "too many requests; try again in a moment",
        rid,
    );
    let secs = wait.as_secs().max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Takes a token from `limiter` for `key`, or the 429 answer.
pub(crate) fn limited<K: std::hash::Hash + ?Sized>(
    limiter: &RateLimiter,
    key: &K,
    rid: &str,
) -> Result<(), Box<Response<Body>>> {
    limiter.check(key, Instant::now()).map_err(|wait| {
        tracing::info!(request_id = %rid, limit = limiter.name, retry_after_ms = wait.as_millis() as u64, "rate limited");
        metrics::counter!("palisade_edge_rate_limited_total", "limit" => limiter.name).increment(1);
        Box::new(too_many(wait, rid))
    })
}

/// Group names for the `x-palisade-groups` header: each percent-encoded (a `,` inside a name
/// becomes `%2C`), then joined with `,`, so no group reads as two.
fn groups_header(groups: &[String]) -> String {
    groups
        .iter()
        .map(|g| {
            g.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~ @:+/=".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(",")
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
                Duration::from_secs(LOGIN_TTL_SECS as u64),
                MAX_USED_STATES,
            ),
            limits: Limiters::new(options.rates),
            hsts,
        }
    }

    /// Handles one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let rid = random_token()
            .map(|t| t[..16].to_string())
            .unwrap_or_else(|_| "-".into());
        let method = req.method().clone();
        let path_for_log = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let mut resp = self.route(req, peer, &rid).await;
        if let Ok(v) = HeaderValue::from_str(&rid) {
            resp.headers_mut().insert("x-request-id", v);
        }
        if let Some(h) = &self.hsts {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, h.clone());
        }
        metrics::histogram!("palisade_edge_request_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("palisade_edge_requests_total", "status" => resp.status().as_u16().to_string())
            .increment(1);
        tracing::debug!(request_id = %rid, %method, path = %path_for_log, status = resp.status().as_u16(), client = %peer.ip(), "request");
        resp
    }

    async fn route(&self, req: Request<Incoming>, peer: SocketAddr, rid: &str) -> Response<Body> {
        if let Some(problem) = framing_problem(&req) {
            tracing::info!(request_id = %rid, client = %peer.ip(), problem, "refused an ambiguous request");
            let mut r = pages::message(StatusCode::BAD_REQUEST, "Bad request", problem, rid);
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        let Some((authority, host)) = authority(&req) else {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "the request names no valid host",
                rid,
            );
        };
        let view = self.replica.view();
        let semicolons = view
            .as_ref()
            .and_then(|v| v.policy.as_ref())
            .map(|(_, p)| p.request_paths().semicolon_parameters)
            .unwrap_or_default();
        let path = match palisade_policy::path::normalize_with(req.uri().path(), semicolons) {
            Ok(p) => p,
            Err(e) => {
                return pages::message(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    &format!("the request path is refused: {e}"),
                    rid,
                );
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
        if let (Some(view), Some(reserved)) = (&view, reserved)
            && let Some(policy) = view.compiled_policy()
        {
            let policy = policy.clone();
            if let Err(r) = limited(&self.limits.reserved, &peer.ip(), rid) {
                return *r;
            }
            return match reserved {
                ReservedPath::Callback | ReservedPath::Login => {
                    if let Err(r) = limited(&self.limits.sign_in, &peer.ip(), rid) {
                        return *r;
                    }
                    if reserved == ReservedPath::Callback {
                        self.callback(&req, view, &policy, &authority, &host, rid)
                            .await
                    } else {
                        self.login_choice(&req, view, &policy, &authority, &host, rid)
                            .await
                    }
                }
                ReservedPath::Logout => self.logout(req, view, &authority, &host, rid).await,
                ReservedPath::Jwks | ReservedPath::Unknown => pages::message(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "there is no such Palisade page",
                    rid,
                ),
                mfa_or_portal => {
                    self.mfa_routes(
                        req,
                        view,
                        &policy,
                        &authority,
                        &host,
                        mfa_or_portal,
                        peer,
                        rid,
                    )
                    .await
                }
            };
        }
        let now = now_secs();
        let head = Head {
            host: host.clone(),
            path: path.clone(),
            method: req.method().clone(),
            peer: peer.ip(),
            transport: if req.version() == http::Version::HTTP_2 {
                Transport::H2
            } else {
                Transport::H1
            },
            session: cookie::get(req.headers(), cookie::SESSION).map(str::to_string),
            mfa: cookie::get(req.headers(), cookie::MFA).map(str::to_string),
        };
        let Enforced {
            verdict,
            session_refused,
        } = enforce(
            view.as_deref(),
            &head.request(0),
            self.replica.staleness(),
            now,
        );
        if let Some(why) = session_refused {
            tracing::debug!(request_id = %rid, reason = %why, "session cookie refused");
        }
        if let Some(app) = verdict.app() {
            tracing::debug!(request_id = %rid, app = %app.id, verdict = verdict.kind(), "decided");
        }
        let mut resp = match verdict {
            Verdict::Unavailable(Unavailable::NotReady) => pages::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Starting up",
                "this edge has not received its configuration yet; try again in a moment",
                rid,
            ),
            Verdict::NotFound => pages::message(
                StatusCode::NOT_FOUND,
                "Not found",
                "no application is served at this address",
                rid,
            ),
            Verdict::BadPath(e) => {
                tracing::info!(request_id = %rid, client = %peer.ip(), error = %e, "refused an ambiguous path");
                pages::message(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    &format!("the request path is refused: {e}"),
                    rid,
                )
            }
            Verdict::Forward { app, caller, .. } => {
                let watch = Watch::new(
                    self.replica.clone(),
                    head,
                    caller.as_ref().map(|c| c.session.sid.clone()),
                    now,
                );
                self.forward(
                    req,
                    app,
                    caller.as_ref(),
                    &authority,
                    &path,
                    peer,
                    rid,
                    now,
                    watch,
                )
                .await
            }
            Verdict::Unavailable(stale @ Unavailable::Stale { .. }) => {
                let v = Verdict::Unavailable(stale);
                tracing::info!(request_id = %rid, explanation = %v.explain(), "denied");
                pages::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Temporarily unavailable",
                    &v.explain(),
                    rid,
                )
            }
            ref denied @ Verdict::Deny {
                app,
                ref rule,
                ref reason,
            } => {
                // The page names the rule and the request id; what the rule would have needed
                // (who else is allowed) stays in the log and in `palisadectl simulate`.
                tracing::info!(request_id = %rid, app = %app.id, explanation = %denied.explain(), "denied");
                let why = match reason {
                    DenyReason::NoRuleMatched { .. } => "no rule allows this request".to_string(),
                    other => other.to_string(),
                };
                pages::denied(&app.name, rule.as_ref().map(|r| &*r.name), &why, &[], rid)
            }
            Verdict::SignIn { app, providers } => {
                let return_to = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                let (Some(view), Some(policy)) = (
                    view.as_deref(),
                    view.as_deref().and_then(View::compiled_policy),
                ) else {
                    return pages::message(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Starting up",
                        "this edge has not received its configuration yet; try again in a moment",
                        rid,
                    );
                };
                self.challenge_login(
                    &req, view, policy, app, &providers, &authority, &return_to, rid,
                )
                .await
            }
            Verdict::Mfa { rule, methods, .. } => {
                let return_to = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                if wants_html(&req) {
                    redirect(
                        StatusCode::SEE_OTHER,
                        &format!(
                            "{MFA_PROMPT}?rd={}",
                            url::form_urlencoded::byte_serialize(return_to.as_bytes())
                                .collect::<String>()
                        ),
                    )
                } else {
                    let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                    let mut r = pages::message(
                        StatusCode::UNAUTHORIZED,
                        "Second factor required",
                        &format!(
                            "rule {} needs a second factor (one of {}): open {} in a browser",
                            rule.as_ref().map(|r| &*r.name).unwrap_or("-"),
                            names.join(", "),
                            MFA_PROMPT
                        ),
                        rid,
                    );
                    if let Ok(v) = HeaderValue::from_str(&format!(
                        "Palisade-MFA methods=\"{}\"",
                        names.join(" ")
                    )) {
                        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                    }
                    r
                }
            }
        };
        if session_refused.is_some() {
            resp.headers_mut()
                .append(header::SET_COOKIE, cookie::clear(cookie::SESSION));
        }
        resp
    }

    /// Reads and checks the session and MFA cookies: the caller, if they make one.
    pub(crate) fn caller(
        &self,
        req: &Request<Incoming>,
        view: &View,
        host: &str,
        now: i64,
    ) -> Option<Caller> {
        palisade_edge_core::session::verify(
            view,
            cookie::get(req.headers(), cookie::SESSION),
            cookie::get(req.headers(), cookie::MFA),
            host,
            now,
            0,
        )
        .unwrap_or_else(|why| {
            tracing::debug!(reason = %why, "session cookie refused");
            None
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        req: Request<Incoming>,
        app: &CompiledApp,
        caller: Option<&Caller>,
        authority: &str,
        path: &str,
        peer: SocketAddr,
        rid: &str,
        now: i64,
        watch: Watch,
    ) -> Response<Body> {
        let mut identity = Vec::new();
        let mut refresh = None;
        if let Some(c) = caller {
            let claims = AssertionClaims {
                iss: crate::assertion::ISSUER.into(),
                aud: app.id.to_string(),
                sub: c.session.sub.clone(),
                idp: c.session.idp.clone(),
                email: c.session.email.clone(),
                name: c.session.name.clone(),
                groups: c.session.groups.clone(),
                amr: c
                    .identity
                    .mfa
                    .as_ref()
                    .map(|m| m.method.as_str().to_string()),
                jti: rid.to_string(),
                iat: now,
                exp: now + crate::assertion::LIFETIME_SECS,
            };
            match self.signer.sign(&claims) {
                Ok(jwt) => push_header(&mut identity, "x-palisade-assertion", &jwt),
                Err(e) => {
                    tracing::error!(request_id = %rid, error = %e, "could not sign the identity assertion");
                    return pages::message(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Error",
                        "the edge could not vouch for your identity",
                        rid,
                    );
                }
            }
            push_header(&mut identity, "x-palisade-user", &c.session.sub);
            push_header(
                &mut identity,
                "x-palisade-identity-provider",
                &c.session.idp,
            );
            if !c.session.email.is_empty() {
                push_header(&mut identity, "x-palisade-email", &c.session.email);
            }
            if !c.session.groups.is_empty() {
                push_header(
                    &mut identity,
                    "x-palisade-groups",
                    &groups_header(&c.session.groups),
                );
            }
            if c.session.should_refresh(now) {
                refresh = Some(c.session.clone());
            }
        }
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let fwd = Forwarding {
            client_ip: peer.ip(),
            authority: authority.to_string(),
            path_and_query,
            identity,
            request_id: rid.to_string(),
            max_body: app.max_body_bytes,
        };
        let upgrade_watch = watch.clone();
        let result = self
            .upstreams
            .forward(&app.upstreams, req, fwd, move |client, upstream| {
                tokio::spawn(upgrade_watch.splice(client, upstream));
            })
            .await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %rid, app = %app.id, error = %e.detail, status = e.status.as_u16(), "upstream request failed");
                return pages::message(e.status, "Upstream error", e.public, rid);
            }
        };
        // A response that may stream for a while (no length, or a long one) is cut when access
        // ends; short ones are done before that could matter.
        let long = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_none_or(|n| n > 1024 * 1024);
        if long && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (parts, body) = resp.into_parts();
            resp = Response::from_parts(parts, watch.body(body));
        }
        if let Some(mut s) = refresh
            && let Some(v) = self.replica.view()
        {
            s.last_active = now;
            if let Ok(tok) = v.keyring.sign(TokenKind::Session, &s) {
                resp.headers_mut().append(
                    header::SET_COOKIE,
                    cookie::set(cookie::SESSION, &tok, s.exp - now),
                );
            }
        }
        resp
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn challenge_login(
        &self,
        req: &Request<Incoming>,
        view: &View,
        policy: &CompiledPolicy,
        app: &CompiledApp,
        providers: &[String],
        authority: &str,
        return_to: &str,
        rid: &str,
    ) -> Response<Body> {
        if !wants_html(req) {
            return pages::message(
                StatusCode::UNAUTHORIZED,
                "Sign-in required",
                "this request needs a signed-in session",
                rid,
            );
        }
        let known: Vec<&IdentityProvider> = providers
            .iter()
            .filter_map(|p| policy.identity_provider(p))
            .collect();
        match known.as_slice() {
            [] => pages::message(
                StatusCode::FORBIDDEN,
                "No sign-in available",
                "this application names no identity provider",
                rid,
            ),
            [one] => self.start_login(view, one, authority, return_to, rid).await,
            many => {
                let list: Vec<(String, String)> = many
                    .iter()
                    .map(|p| {
                        (
                            p.id.clone(),
                            p.display_name.clone().unwrap_or_else(|| p.id.clone()),
                        )
                    })
                    .collect();
                pages::choose_provider(&app.name, &list, return_to, rid)
            }
        }
    }

    async fn login_choice(
        &self,
        req: &Request<Incoming>,
        view: &View,
        policy: &CompiledPolicy,
        authority: &str,
        host: &str,
        rid: &str,
    ) -> Response<Body> {
        let q = req.uri().query();
        let return_to = safe_return_to(&query_param(q, "rd").unwrap_or_else(|| "/".into()));
        let idp = query_param(q, "idp").unwrap_or_default();
        let rd_path = return_to.split('?').next().unwrap_or("/");
        let allowed = policy.route(host, rd_path).is_some_and(|a| {
            a.identity_providers.is_empty() || a.identity_providers.contains(&idp)
        });
        match policy.identity_provider(&idp) {
            Some(p) if allowed => self.start_login(view, p, authority, &return_to, rid).await,
            _ => pages::message(
                StatusCode::BAD_REQUEST,
                "Sign-in not possible",
                "this application does not accept that identity provider",
                rid,
            ),
        }
    }

    async fn start_login(
        &self,
        view: &View,
        p: &IdentityProvider,
        authority: &str,
        return_to: &str,
        rid: &str,
    ) -> Response<Body> {
        // every failure is a page; the log line says why
        let unavailable = |status: StatusCode, text: &str| {
            pages::message(status, "Sign-in unavailable", text, rid)
        };
        let attempt = match Attempt::new() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "no randomness");
                return unavailable(StatusCode::INTERNAL_SERVER_ERROR, "sign-in could not start");
            }
        };
        let redirect_uri = format!("https://{authority}{RESERVED}callback");
        let url = match self.rp.authorization_url(p, &redirect_uri, &attempt).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(request_id = %rid, provider = %p.id, error = %e, "identity provider unavailable");
                return unavailable(
                    StatusCode::BAD_GATEWAY,
                    "the identity provider could not be reached; try again shortly",
                );
            }
        };
        let state = LoginState {
            state: attempt.state.clone(),
            nonce: attempt.nonce,
            verifier: attempt.verifier,
            idp: p.id.clone(),
            return_to: return_to.to_string(),
            redirect_uri,
        };
        let exp = now_secs() + LOGIN_TTL_SECS;
        let sealed = match cookie::seal(&view.keyring, "login", &state, exp) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "cannot seal the login state");
                return unavailable(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this edge cannot start a sign-in yet",
                );
            }
        };
        let mut r = redirect(StatusCode::FOUND, &url);
        r.headers_mut().append(
            header::SET_COOKIE,
            cookie::set(&login_cookie_name(&attempt.state), &sealed, LOGIN_TTL_SECS),
        );
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn callback(
        &self,
        req: &Request<Incoming>,
        view: &View,
        policy: &CompiledPolicy,
        _authority: &str,
        host: &str,
        rid: &str,
    ) -> Response<Body> {
        let q = req.uri().query();
        let fail =
            |status: StatusCode, text: &str| pages::message(status, "Sign-in failed", text, rid);
        if let Some(err) = query_param(q, "error") {
            let err: String = err
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            tracing::info!(request_id = %rid, error = %err, "the identity provider refused the sign-in");
            return fail(
                StatusCode::UNAUTHORIZED,
                &format!("the identity provider refused the sign-in ({err})"),
            );
        }
        let Some(state) = query_param(q, "state").filter(|s| !s.is_empty()) else {
            return fail(
                StatusCode::BAD_REQUEST,
                "the sign-in response has no state; start again from the application",
            );
        };
        let Some(code) = query_param(q, "code").filter(|s| !s.is_empty()) else {
            return fail(StatusCode::BAD_REQUEST, "the sign-in response has no code");
        };
        let cookie_name = login_cookie_name(&state);
        let Some(sealed) = cookie::get(req.headers(), &cookie_name) else {
            return fail(
                StatusCode::BAD_REQUEST,
                "this sign-in attempt is unknown here or has expired; start again from the application",
            );
        };
        let now = now_secs();
        let login: LoginState = match cookie::open(&view.keyring, "login", sealed, now) {
            Ok(l) => l,
            Err(e) => return fail(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        if !bool::from(login.state.as_bytes().ct_eq(state.as_bytes())) {
            return fail(
                StatusCode::BAD_REQUEST,
                "the sign-in response does not belong to this attempt",
            );
        }
        match self.used_states.record(&login.state, Instant::now()) {
            Use::First => {}
            Use::Replayed => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "this sign-in response was already used",
                );
            }
            Use::Full => {
                tracing::warn!(request_id = %rid, "the store of used sign-in states is full");
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many sign-ins are in progress at this edge; try again shortly",
                );
            }
        }
        let Some(p) = policy.identity_provider(&login.idp) else {
            return fail(
                StatusCode::BAD_REQUEST,
                "the identity provider of this attempt no longer exists",
            );
        };
        if let Some(iss) = query_param(q, "iss")
            && iss != p.issuer
        {
            return fail(
                StatusCode::BAD_REQUEST,
                "the sign-in response comes from another issuer",
            );
        }
        let Some(secret) = view.secret(&p.client_secret_ref) else {
            tracing::error!(request_id = %rid, provider = %p.id, secret = %p.client_secret_ref, "the client secret is not in the catalog (palisadectl secrets put)");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "sign-in is not configured completely; tell your administrator",
            );
        };
        let secret = String::from_utf8_lossy(secret);
        let signed_in = match self
            .rp
            .exchange(
                p,
                &secret,
                &login.redirect_uri,
                &code,
                &login.verifier,
                &login.nonce,
            )
            .await
        {
            Ok(s) => s,
            Err(crate::oidc::ProviderError::IdToken(e)) => {
                tracing::warn!(request_id = %rid, provider = %p.id, error = %e, "ID token refused");
                return fail(StatusCode::UNAUTHORIZED, &e.to_string());
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, provider = %p.id, error = %e, "code exchange failed");
                return fail(
                    StatusCode::BAD_GATEWAY,
                    "the identity provider did not confirm the sign-in",
                );
            }
        };
        let rd_path = login.return_to.split('?').next().unwrap_or("/");
        let (lifetime, idle) = policy
            .route(host, rd_path)
            .map(|a| (a.session_lifetime, a.idle_timeout))
            .unwrap_or((Duration::from_secs(8 * 3600), Duration::from_secs(3600)));
        let session = match session_claims(
            p,
            &signed_in.subject,
            &signed_in.claims,
            host,
            now,
            lifetime,
            idle,
            view.revision,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "no randomness");
                return fail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the session could not be created",
                );
            }
        };
        let token = match view.keyring.sign(TokenKind::Session, &session) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "cannot sign sessions");
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this edge cannot create sessions yet",
                );
            }
        };
        tracing::info!(request_id = %rid, provider = %p.id, subject = %session.sub, "signed in");
        self.record_auth_event(
            &p.id,
            &session.sub,
            "login.oidc",
            "ok",
            rid,
            std::collections::BTreeMap::from([
                ("session_id".to_string(), session.sid.clone()),
                ("host".to_string(), host.to_string()),
                ("issued_at".to_string(), session.iat.to_string()),
                ("expires_at".to_string(), session.exp.to_string()),
                ("revision".to_string(), session.rev.to_string()),
            ]),
        );
        let mut r = redirect(StatusCode::SEE_OTHER, &safe_return_to(&login.return_to));
        let h = r.headers_mut();
        h.append(
            header::SET_COOKIE,
            cookie::set(cookie::SESSION, &token, session.exp - now),
        );
        h.append(header::SET_COOKIE, cookie::clear(&cookie_name));
        h.append(header::SET_COOKIE, cookie::clear(cookie::MFA));
        r
    }

    /// Sign-out: `GET` shows a confirmation form (a link from another site must not sign
    /// anyone out); `POST` with the session's anti-CSRF token from this origin revokes the
    /// session everywhere.
    async fn logout(
        &self,
        req: Request<Incoming>,
        view: &View,
        authority: &str,
        host: &str,
        rid: &str,
    ) -> Response<Body> {
        let now = now_secs();
        let caller = self.caller(&req, view, host, now);
        let Some(c) = caller else {
            let mut r = pages::message(StatusCode::OK, "Signed out", "you are signed out", rid);
            r.headers_mut()
                .append(header::SET_COOKIE, cookie::clear(cookie::SESSION));
            r.headers_mut()
                .append(header::SET_COOKIE, cookie::clear(cookie::MFA));
            return r;
        };
        match *req.method() {
            Method::GET | Method::HEAD => {
                let csrf = crate::mfa::csrf_token(&c.session.sid);
                let body = format!(
                    "<p>Sign out of this session? It ends at every application and every edge.</p>\
                     <form method=post action=\"{RESERVED}logout\"><input type=hidden name=csrf value=\"{csrf}\">\
                     <button type=submit id=sign-out>Sign out</button></form>"
                );
                return pages::page(StatusCode::OK, "Sign out", &body, rid);
            }
            Method::POST => {}
            _ => {
                return pages::message(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Not allowed",
                    "sign out with the form on this page",
                    rid,
                );
            }
        }
        if !crate::mfa::same_origin(&req, authority) {
            return crate::mfa::cross_site_refused(rid);
        }
        let Some(body) = crate::mfa::read_body(req).await else {
            return pages::message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "the form is too large",
                rid,
            );
        };
        let form: std::collections::BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        if !crate::mfa::csrf_ok(form.get("csrf"), &c) {
            return crate::mfa::csrf_refused(rid);
        }
        let Some(ctl) = &self.controllers else {
            return pages::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-out failed",
                "this edge cannot reach the controllers",
                rid,
            );
        };
        let user = c.user_ref();
        let target = pb::revocation_target::Target::SessionId(user.session_id.clone());
        let mut r = match ctl.revoke_own(user, target, "signed out").await {
            Ok(revision) => {
                // Answer once this edge enforces it too, so "signed out" is true here.
                let mut w = self.replica.watch();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), w.wait_for(|r| *r >= revision))
                        .await;
                tracing::info!(request_id = %rid, subject = %c.session.sub, revision, "signed out");
                pages::message(
                    StatusCode::OK,
                    "Signed out",
                    "you are signed out everywhere this session was used",
                    rid,
                )
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "sign-out could not be recorded");
                return pages::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-out failed",
                    "the sign-out could not be recorded; try again",
                    rid,
                );
            }
        };
        r.headers_mut()
            .append(header::SET_COOKIE, cookie::clear(cookie::SESSION));
        r.headers_mut()
            .append(header::SET_COOKIE, cookie::clear(cookie::MFA));
        r
    }
}

fn login_cookie_name(state: &str) -> String {
    let short: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("{}{short}", cookie::LOGIN_PREFIX)
}

fn push_header(out: &mut Vec<(HeaderName, HeaderValue)>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        out.push((HeaderName::from_static(name), v));
    }
}

fn claim_strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Builds the session from the provider's claims, as the provider's claim mapping says. The
/// email counts only if the provider may assert it (`email_verified`, the provider's domains);
/// otherwise the session has none. `revision` is the catalog revision this edge enforces.
#[allow(clippy::too_many_arguments)]
fn session_claims(
    p: &IdentityProvider,
    subject: &str,
    claims: &serde_json::Map<String, Value>,
    host: &str,
    now: i64,
    lifetime: Duration,
    idle: Duration,
    revision: u64,
) -> Result<SessionClaims, crate::oidc::ProviderError> {
    let first = |name: &str| {
        claim_strings(claims.get(name))
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    const SKIP: &[&str] = &[
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "at_hash",
        "c_hash",
        "email_verified",
        "auth_time",
        "sid",
        "azp",
        "jti",
        "sub",
        "acr",
        "amr",
    ];
    let mut extra = std::collections::BTreeMap::new();
    let mut size = 0;
    for (k, v) in claims {
        if SKIP.contains(&k.as_str())
            || *k == p.claims.email
            || *k == p.claims.groups
            || *k == p.claims.name
        {
            continue;
        }
        let vals = claim_strings(Some(v));
        let cost = k.len() + vals.iter().map(|s| s.len() + 3).sum::<usize>();
        if vals.is_empty() || size + cost > MAX_EXTRA_CLAIMS {
            continue;
        }
        size += cost;
        extra.insert(k.clone(), vals);
    }
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let email = p
        .accepted_email(&first(&p.claims.email), verified)
        .unwrap_or_default();
    Ok(SessionClaims {
        sid: random_token()?,
        idp: p.id.clone(),
        sub: subject.to_string(),
        email,
        name: first(&p.claims.name),
        groups: claim_strings(claims.get(&p.claims.groups)),
        claims: extra,
        aud: host.to_string(),
        iat: now,
        exp: now + lifetime.as_secs() as i64,
        last_active: now,
        idle_secs: idle.as_secs() as i64,
        rev: revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_local() {
        assert_eq!(safe_return_to("/a?b=1"), "/a?b=1");
        for bad in [
            "//evil.test/x",
            "/\\evil.test",
            "https://evil.test",
            "",
            "x",
            "/a\r\nSet-Cookie: x",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Header handling never panics, whatever the client sends.
        #[test]
        fn header_handling_never_panics(
            headers in proptest::collection::vec(("[a-zA-Z0-9-]{1,20}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60)), 0..12),
            host in ".{0,40}",
            path in "/.{0,60}",
        ) {
            let mut b = Request::builder().uri(
                http::Uri::try_from(path.as_str()).unwrap_or_else(|_| http::Uri::from_static("/")),
            );
            if let Ok(v) = HeaderValue::from_str(&host) {
                b = b.header(header::HOST, v);
            }
            let mut req = b.body(()).unwrap();
            for (k, v) in &headers {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(v)) {
                    req.headers_mut().append(k, v);
                }
            }
            let _ = framing_problem(&req);
            let _ = authority(&req);
            let _ = palisade_policy::path::normalize(req.uri().path());
            let fwd = crate::proxy::Forwarding {
                client_ip: "127.0.0.1".parse().unwrap(),
                authority: "a.test".into(),
                path_and_query: "/".into(),
                identity: Vec::new(),
                request_id: "r".into(),
                max_body: None,
            };
            let mut h = req.headers().clone();
            crate::proxy::prepare_request_headers(&mut h, &fwd, false);
            for k in h.keys() {
                proptest::prop_assert!(!k.as_str().starts_with("x-palisade-"), "{k} survived");
            }
            let _ = cookie::get(req.headers(), cookie::SESSION);
        }
    }

    #[test]
    fn framing_refuses_ambiguous_lengths() {
        let r = |hs: &[(&str, &str)]| {
            let mut b = Request::post("/");
            for (k, v) in hs {
                b = b.header(*k, *v);
            }
            framing_problem(&b.body(()).unwrap())
        };
        assert!(r(&[("content-length", "5")]).is_none());
        assert!(r(&[("transfer-encoding", "chunked")]).is_none());
        assert!(r(&[("content-length", "5"), ("transfer-encoding", "chunked")]).is_some());
        assert!(r(&[("content-length", "5"), ("content-length", "5")]).is_some());
        assert!(r(&[("content-length", "5, 5")]).is_some());
        assert!(r(&[("host", "a"), ("host", "b")]).is_some());
    }

    #[test]
    fn login_cookie_names_are_tokens() {
        let n = login_cookie_name("ab-_c.D9xyz0123456789");
        assert_eq!(n, "__Host-palisade-login-abcD9xyz0123");
    }
}
