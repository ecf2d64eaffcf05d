//! The upstream side of a request the core let through: identity headers set by the edge
//! only, the signed identity assertion, the proxied answer, and the session refresh.

use std::net::SocketAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use palisade_edge_core::Caller;
use palisade_policy::CompiledApp;
use palisade_policy::token::TokenKind;

use crate::assertion::AssertionClaims;
use crate::cookie;
use crate::enforce::Watch;
use crate::http::Gateway;
use crate::http::error::{EdgeError, Format};
use crate::proxy::{Body, Forwarding};

/// What forwarding needs to know about the request besides its head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    /// The authority the client addressed.
    pub(crate) authority: &'a str,
    /// The normalised path forwarded.
    pub(crate) path: &'a str,
    /// The client.
    pub(crate) peer: SocketAddr,
    /// The request id.
    pub(crate) rid: &'a str,
    /// When the request arrived (unix seconds).
    pub(crate) now: i64,
}

impl Gateway {
    /// Proxies a request the core let through: the identity headers and the signed assertion
    /// for `caller` (naming the `rule` that let it in), the upstream's answer (a long or streaming one cut when access ends), and
    /// a refreshed session cookie when it is due.
    pub(crate) async fn forward(
        &self,
        at: &Head<'_>,
        req: Request<Body>,
        app: &CompiledApp,
        caller: Option<&Caller>,
        rule: &str,
        watch: Watch,
    ) -> Response<Body> {
        let Head {
            authority,
            path,
            peer,
            rid,
            now,
        } = *at;
        let mut identity = Vec::new();
        let mut refresh = None;
        let proto = match req.version() {
            http::Version::HTTP_3 => "h3",
            http::Version::HTTP_2 => "h2",
            _ => "http/1.1",
        };
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
                rule: rule.to_string(),
                device: c.session.did.clone(),
                proto: proto.to_string(),
                jti: rid.to_string(),
                iat: now,
                exp: now + crate::assertion::LIFETIME_SECS,
            };
            match self.signer.sign(&claims) {
                Ok(jwt) => push_header(&mut identity, "x-palisade-assertion", &jwt),
                Err(e) => {
                    tracing::error!(request_id = %rid, error = %e, "could not sign the identity assertion");
                    return EdgeError::refused(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Error",
                        "the edge could not vouch for your identity",
                    )
                    .into_response(Format::Html, rid);
                }
            }
            push_header(&mut identity, "x-palisade-user", &c.session.sub);
            push_header(&mut identity, "x-palisade-protocol", proto);
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
                return EdgeError::refused(e.status, "Upstream error", e.public)
                    .into_response(Format::Html, rid);
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
}

fn push_header(out: &mut Vec<(HeaderName, HeaderValue)>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        out.push((HeaderName::from_static(name), v));
    }
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
