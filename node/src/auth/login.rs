//! Sign-in with OpenID Connect and sign-out: the redirect to the provider (or the provider
//! choice), the callback that issues the session, and the sign-out form that revokes it
//! everywhere.
//!
//! The attempt (state, nonce, PKCE verifier, return path) travels sealed in a short-lived
//! cookie named after the state; each state is accepted once per edge (`UsedStates`).

use std::time::{Duration, Instant};

use http::header;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use palisade_edge_core::enforce::Verdict;
use palisade_policy::CompiledApp;
use palisade_policy::document::IdentityProvider;
use palisade_policy::token::TokenKind;
use palisade_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::RESERVED;
use crate::auth::claims::{Issue, UserRefOf, session_claims};
use crate::cookie;
use crate::http::Gateway;
use crate::http::context::RequestCtx;
use crate::http::csrf::{csrf_token, guard};
use crate::http::error::EdgeError;
use crate::http::framing::{query_param, redirect, safe_return_to, wants_html};
use crate::limits::Use;
use crate::oidc::Attempt;
use crate::pages;
use crate::proxy::Body;

/// How long a sign-in attempt may take.
pub(crate) const LOGIN_TTL_SECS: i64 = 600;

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

type Answer = Result<Response<Body>, EdgeError>;

fn failed(status: StatusCode, text: impl Into<std::borrow::Cow<'static, str>>) -> EdgeError {
    EdgeError::refused(status, "Sign-in failed", text)
}

fn unavailable(status: StatusCode, text: &'static str) -> EdgeError {
    EdgeError::refused(status, "Sign-in unavailable", text)
}

impl Gateway {
    /// The answer to a request that needs a session: a redirect to the provider (or the
    /// choice between providers) for a browser, 401 for anything else.
    pub(crate) async fn challenge_login(
        &self,
        ctx: &RequestCtx,
        req: &Parts,
        app: &CompiledApp,
        providers: &[String],
        return_to: &str,
    ) -> Answer {
        if !wants_html(req) {
            return Err(EdgeError::refused(
                StatusCode::UNAUTHORIZED,
                "Sign-in required",
                "this request needs a signed-in session",
            ));
        }
        let known: Vec<&IdentityProvider> = providers
            .iter()
            .filter_map(|p| ctx.policy.identity_provider(p))
            .collect();
        match known.as_slice() {
            [] => Err(EdgeError::refused(
                StatusCode::FORBIDDEN,
                "No sign-in available",
                "this application names no identity provider",
            )),
            [one] => self.start_login(ctx, one, return_to).await,
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
                Ok(pages::choose_provider(
                    &app.name, &list, return_to, &ctx.rid,
                ))
            }
        }
    }

    /// `/.palisade/login?idp=..&rd=..`: sign-in with the chosen provider, if the application at
    /// `rd` accepts it.
    pub(crate) async fn login_choice(&self, ctx: &RequestCtx, req: &Parts) -> Answer {
        let q = req.uri.query();
        let return_to = safe_return_to(&query_param(q, "rd").unwrap_or_else(|| "/".into()));
        let idp = query_param(q, "idp").unwrap_or_default();
        let rd_path = return_to.split('?').next().unwrap_or("/");
        let allowed = ctx.policy.route(&ctx.host, rd_path).is_some_and(|a| {
            a.identity_providers.is_empty() || a.identity_providers.contains(&idp)
        });
        match ctx.policy.identity_provider(&idp) {
            Some(p) if allowed => self.start_login(ctx, p, &return_to).await,
            _ => Err(EdgeError::refused(
                StatusCode::BAD_REQUEST,
                "Sign-in not possible",
                "this application does not accept that identity provider",
            )),
        }
    }

    async fn start_login(&self, ctx: &RequestCtx, p: &IdentityProvider, return_to: &str) -> Answer {
        // every failure is a page; the log line says why
        let rid = &ctx.rid;
        let attempt = Attempt::new().map_err(|e| {
            tracing::error!(request_id = %rid, error = %e, "no randomness");
            unavailable(StatusCode::INTERNAL_SERVER_ERROR, "sign-in could not start")
        })?;
        let redirect_uri = format!("https://{}{RESERVED}callback", ctx.authority);
        let url = self
            .rp
            .authorization_url(p, &redirect_uri, &attempt)
            .await
            .map_err(|e| {
                tracing::warn!(request_id = %rid, provider = %p.id, error = %e, "identity provider unavailable");
                unavailable(
                    StatusCode::BAD_GATEWAY,
                    "the identity provider could not be reached; try again shortly",
                )
            })?;
        let state = LoginState {
            state: attempt.state.clone(),
            nonce: attempt.nonce,
            verifier: attempt.verifier,
            idp: p.id.clone(),
            return_to: return_to.to_string(),
            redirect_uri,
        };
        let exp = ctx.now + LOGIN_TTL_SECS;
        let sealed = cookie::seal(&ctx.view.keyring, "login", &state, exp).map_err(|e| {
            tracing::error!(request_id = %rid, error = %e, "cannot seal the login state");
            unavailable(
                StatusCode::SERVICE_UNAVAILABLE,
                "this edge cannot start a sign-in yet",
            )
        })?;
        let mut r = redirect(StatusCode::FOUND, &url);
        r.headers_mut().append(
            header::SET_COOKIE,
            cookie::set(&login_cookie_name(&attempt.state), &sealed, LOGIN_TTL_SECS),
        );
        Ok(r)
    }

    /// `/.palisade/callback`: the provider's answer. Issues the session and returns the user
    /// where they were going.
    pub(crate) async fn callback(&self, ctx: &RequestCtx, req: &Parts) -> Answer {
        let rid = &ctx.rid;
        let q = req.uri.query();
        if let Some(err) = query_param(q, "error") {
            let err: String = err
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            tracing::info!(request_id = %rid, error = %err, "the identity provider refused the sign-in");
            return Err(failed(
                StatusCode::UNAUTHORIZED,
                format!("the identity provider refused the sign-in ({err})"),
            ));
        }
        let state = query_param(q, "state")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                failed(
                    StatusCode::BAD_REQUEST,
                    "the sign-in response has no state; start again from the application",
                )
            })?;
        let code = query_param(q, "code")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| failed(StatusCode::BAD_REQUEST, "the sign-in response has no code"))?;
        let cookie_name = login_cookie_name(&state);
        let sealed = cookie::get(&req.headers, &cookie_name).ok_or_else(|| {
            failed(
                StatusCode::BAD_REQUEST,
                "this sign-in attempt is unknown here or has expired; start again from the application",
            )
        })?;
        let now = ctx.now;
        let login: LoginState = cookie::open(&ctx.view.keyring, "login", sealed, now)
            .map_err(|e| failed(StatusCode::BAD_REQUEST, e.to_string()))?;
        if !bool::from(login.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(failed(
                StatusCode::BAD_REQUEST,
                "the sign-in response does not belong to this attempt",
            ));
        }
        match self.used_states.record(&login.state, Instant::now()) {
            Use::First => {}
            Use::Replayed => {
                return Err(failed(
                    StatusCode::BAD_REQUEST,
                    "this sign-in response was already used",
                ));
            }
            Use::Full => {
                tracing::warn!(request_id = %rid, "the store of used sign-in states is full");
                return Err(failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many sign-ins are in progress at this edge; try again shortly",
                ));
            }
        }
        let p = ctx.policy.identity_provider(&login.idp).ok_or_else(|| {
            failed(
                StatusCode::BAD_REQUEST,
                "the identity provider of this attempt no longer exists",
            )
        })?;
        if let Some(iss) = query_param(q, "iss")
            && iss != p.issuer
        {
            return Err(failed(
                StatusCode::BAD_REQUEST,
                "the sign-in response comes from another issuer",
            ));
        }
        let Some(secret) = ctx.view.secret(&p.client_secret_ref) else {
            tracing::error!(request_id = %rid, provider = %p.id, secret = %p.client_secret_ref, "the client secret is not in the catalog (palisadectl secrets put)");
            return Err(failed(
                StatusCode::SERVICE_UNAVAILABLE,
                "sign-in is not configured completely; tell your administrator",
            ));
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
                return Err(failed(StatusCode::UNAUTHORIZED, e.to_string()));
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, provider = %p.id, error = %e, "code exchange failed");
                return Err(failed(
                    StatusCode::BAD_GATEWAY,
                    "the identity provider did not confirm the sign-in",
                ));
            }
        };
        let rd_path = login.return_to.split('?').next().unwrap_or("/");
        let (lifetime, idle) = ctx
            .policy
            .route(&ctx.host, rd_path)
            .map(|a| (a.session_lifetime, a.idle_timeout))
            .unwrap_or((Duration::from_secs(8 * 3600), Duration::from_secs(3600)));
        let session = session_claims(
            p,
            &signed_in.subject,
            &signed_in.claims,
            Issue {
                host: &ctx.host,
                now,
                lifetime,
                idle,
                revision: ctx.view.revision,
                device: ctx.device_record().map(|d| d.id.as_str()),
            },
        )
        .map_err(|e| {
            tracing::error!(request_id = %rid, error = %e, "no randomness");
            failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the session could not be created",
            )
        })?;
        let token = ctx
            .view
            .keyring
            .sign(TokenKind::Session, &session)
            .map_err(|e| {
                tracing::error!(request_id = %rid, error = %e, "cannot sign sessions");
                failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this edge cannot create sessions yet",
                )
            })?;
        tracing::info!(request_id = %rid, provider = %p.id, subject = %session.sub, "signed in");
        let return_to = safe_return_to(&login.return_to);
        let mut details = std::collections::BTreeMap::from([
            ("session_id".to_string(), session.sid.clone()),
            ("host".to_string(), ctx.host.clone()),
            ("issued_at".to_string(), session.iat.to_string()),
            ("expires_at".to_string(), session.exp.to_string()),
            ("revision".to_string(), session.rev.to_string()),
        ]);
        // A sign-in that the application it was for refuses is recorded as denied (the
        // portal does not list it as a sign-in); the browser still gets the session and
        // sees the denial page for that application, as on any later request.
        let result = match self.denied_at(ctx, &session, &return_to) {
            Some(app) => {
                details.insert("app".to_string(), app);
                "denied"
            }
            None => "ok",
        };
        self.record_auth_event(&p.id, &session.sub, "login.oidc", result, rid, details);
        let mut r = redirect(StatusCode::SEE_OTHER, &return_to);
        let h = r.headers_mut();
        h.append(
            header::SET_COOKIE,
            cookie::set(cookie::SESSION, &token, session.exp - now),
        );
        h.append(header::SET_COOKIE, cookie::clear(&cookie_name));
        h.append(header::SET_COOKIE, cookie::clear(cookie::MFA));
        Ok(r)
    }

    /// Sign-out: `GET` shows a confirmation form (a link from another site must not sign
    /// anyone out); `POST` with the session's anti-CSRF token from this origin revokes the
    /// session everywhere.
    pub(crate) async fn logout(&self, ctx: &RequestCtx, req: Request<Body>) -> Answer {
        let rid = &ctx.rid;
        let signed_out = |text: &str| {
            let mut r = pages::message(StatusCode::OK, "Signed out", text, rid);
            r.headers_mut()
                .append(header::SET_COOKIE, cookie::clear(cookie::SESSION));
            r.headers_mut()
                .append(header::SET_COOKIE, cookie::clear(cookie::MFA));
            r
        };
        let (parts, body) = req.into_parts();
        let Some(c) = self.caller(ctx, &parts.headers) else {
            return Ok(signed_out("you are signed out"));
        };
        match parts.method {
            Method::GET | Method::HEAD => {
                let csrf = csrf_token(&c.session.sid);
                let body = format!(
                    "<p>Sign out of this session? It ends at every application and every edge.</p>\
                     <form method=post action=\"{RESERVED}logout\"><input type=hidden name=csrf value=\"{csrf}\">\
                     <button type=submit id=sign-out>Sign out</button></form>"
                );
                return Ok(pages::page(StatusCode::OK, "Sign out", &body, rid));
            }
            Method::POST => {}
            _ => {
                return Err(EdgeError::MethodNotAllowed(
                    "sign out with the form on this page",
                ));
            }
        }
        guard(&parts, body, &ctx.authority, &c, false).await?;
        let unrecorded = |text: &'static str| {
            EdgeError::refused(StatusCode::SERVICE_UNAVAILABLE, "Sign-out failed", text)
        };
        let Some(ctl) = &self.controllers else {
            return Err(unrecorded("this edge cannot reach the controllers"));
        };
        let user = c.user_ref();
        let target = pb::revocation_target::Target::SessionId(user.session_id.clone());
        match ctl.revoke_own(user, target, "signed out").await {
            Ok(revision) => {
                // Answer once this edge enforces it too, so "signed out" is true here.
                self.wait_applied(revision).await;
                tracing::info!(request_id = %rid, subject = %c.session.sub, revision, "signed out");
                Ok(signed_out(
                    "you are signed out everywhere this session was used",
                ))
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "sign-out could not be recorded");
                Err(unrecorded("the sign-out could not be recorded; try again"))
            }
        }
    }
}

/// The cookie that carries one sign-in attempt, named after its state.
pub(crate) fn login_cookie_name(state: &str) -> String {
    let short: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!("{}{short}", cookie::LOGIN_PREFIX)
}

impl Gateway {
    /// The application at `return_to` (on this host), by name, when it denies the caller a
    /// fresh session makes; `None` when it allows them, asks for more, or is not there.
    fn denied_at(
        &self,
        ctx: &RequestCtx,
        session: &palisade_policy::token::SessionClaims,
        return_to: &str,
    ) -> Option<String> {
        let path = return_to.split('?').next().unwrap_or("/");
        let app = ctx.policy.route(&ctx.host, path)?;
        let caller = palisade_edge_core::Caller::signed_in(session.clone());
        let verdict = palisade_edge_core::enforce::verdict(
            app,
            Some(caller),
            ctx.device_for_decision().as_ref(),
            ctx.peer.ip(),
            ctx.transport,
            self.replica.staleness(),
            ctx.now,
        );
        matches!(verdict, Verdict::Deny { .. }).then(|| app.name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_cookie_names_are_tokens() {
        let n = login_cookie_name("ab-_c.D9xyz0123456789");
        assert_eq!(n, "__Host-palisade-login-abcD9xyz0123");
    }
}
